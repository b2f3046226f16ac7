-- Imprint local store, schema version 8: where an operator comes from.
-- 'local': managed on this station; 'central': copied from the center's
-- central_operators on each sync round (the center's copy wins; an
-- operator removed at the center is disabled here).
ALTER TABLE operators ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
