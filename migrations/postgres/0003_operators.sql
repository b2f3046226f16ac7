-- Attribution: who started each attempt (station operator id; NULL for
-- attempts recorded before operators existed).
ALTER TABLE attempts ADD COLUMN operator text;
