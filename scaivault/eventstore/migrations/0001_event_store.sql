-- Event store tables, with exactly the shape eventsourcing 9.5's PostgresApplicationRecorder creates (uuid originator
-- IDs, single-row tracking), so eventsourcing's own recorders can read them. The storage options are its own too: the
-- tables are append-only, so vacuum has almost nothing to do, but statistics must follow the growth.

CREATE TABLE IF NOT EXISTS scaivault_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);

CREATE UNIQUE INDEX IF NOT EXISTS scaivault_events_notification_id_idx
    ON scaivault_events (notification_id ASC);

CREATE TABLE IF NOT EXISTS scaivault_snapshots (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    PRIMARY KEY (originator_id, originator_version)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);

-- One row per consumer: its position in the notification log (eventsourcing 9.5 "single-row tracking").
CREATE TABLE IF NOT EXISTS scaivault_tracking (
    application_name text,
    notification_id bigint,
    PRIMARY KEY (application_name)
) WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
);
