-- What each catch-up projection is doing, for every server's health endpoint and for operators.
CREATE TABLE IF NOT EXISTS scaivault_projection_status (
    name text PRIMARY KEY,
    state text NOT NULL,                    -- running | failed
    failed_notification_id bigint,          -- the event it stopped on
    error text,                             -- the exception's type and message (never event data)
    updated_at timestamptz NOT NULL DEFAULT now()
);
