-- One row per fired schedule slot of a source. The primary key is what makes
-- a slot fire once however many daemons share the queue: the first INSERT
-- wins, the others find the row there.
CREATE TABLE schedule_slots (
    source_id   TEXT   NOT NULL,
    slot_at     BIGINT NOT NULL,
    outcome     TEXT   NOT NULL,
    jobs        INTEGER NOT NULL DEFAULT 0,
    message     TEXT,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (source_id, slot_at)
);
CREATE INDEX schedule_slots_recorded ON schedule_slots (recorded_at);
