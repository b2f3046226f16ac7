-- Imprint local store, schema version 3: provisioning events for MQTT.
-- An event row is inserted in the SAME transaction that records the pass
-- (imprint-store, mqtt_events.rs), so a passed device can never lack its
-- event. The station's publisher sends pending rows at QoS 1 and marks a row
-- sent only after the broker's PUBACK. Subscribers dedupe on `id`.
-- Never edit an applied migration: add a new numbered file.

CREATE TABLE mqtt_events (
    id          TEXT PRIMARY KEY,             -- UUIDv7, the stable event id (also inside the payload)
    attempt_id  TEXT NOT NULL REFERENCES attempts(id),
    topic       TEXT NOT NULL,
    payload     TEXT NOT NULL,                -- the JSON event, exactly as published
    created_at  TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent')),
    tries       INTEGER NOT NULL DEFAULT 0,   -- publish rounds that did not get its PUBACK
    last_error  TEXT,
    sent_at     TEXT
) STRICT;
CREATE INDEX mqtt_events_pending ON mqtt_events(created_at, id) WHERE state = 'pending';
