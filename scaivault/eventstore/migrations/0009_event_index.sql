-- An index of the whole event log for operators (`scaivault events list`): who, which tenant, when, per event.
-- Built by a catch-up projection (projections/event_index.py); the events themselves stay in scaivault_events.
CREATE TABLE IF NOT EXISTS scaivault_event_index (
    notification_id bigint PRIMARY KEY,
    stream_id uuid NOT NULL,
    topic text COLLATE "C" NOT NULL,
    tenant_id text,
    partner_id text,
    actor text,
    request_id text,
    occurred_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_event_index_tenant_idx ON scaivault_event_index (tenant_id, notification_id);
CREATE INDEX IF NOT EXISTS scaivault_event_index_topic_idx ON scaivault_event_index (topic, notification_id);
CREATE INDEX IF NOT EXISTS scaivault_event_index_time_idx ON scaivault_event_index (occurred_at);
CREATE INDEX IF NOT EXISTS scaivault_event_index_stream_idx ON scaivault_event_index (stream_id, notification_id);
CREATE INDEX IF NOT EXISTS scaivault_event_index_partner_idx ON scaivault_event_index (partner_id, notification_id);
