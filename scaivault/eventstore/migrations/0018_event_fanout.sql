-- The event fan-out (docs/events.md, docs/webhooks.md): public events derived from the log, and where they go.

-- Webhooks: an inline read model of Webhook events (scaivault.domain.webhooks). The signing secrets are sealed
-- (AES-256-GCM under a data key of the tenant, scaivault/crypto/signing_secrets.py); the data keys live in
-- scaivault_data_keys and are destroyed with the webhook. previous_*: the secret replaced by a rotation, still
-- valid for receivers until previous_secret_expires_at (the server always signs with the current one).
CREATE TABLE IF NOT EXISTS scaivault_webhooks (
    webhook_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text NOT NULL,
    name text NOT NULL,
    url text NOT NULL,
    events text[] NOT NULL,
    filters jsonb NOT NULL,
    enabled boolean NOT NULL,
    secret_ciphertext bytea NOT NULL,
    secret_key_id text NOT NULL,
    previous_secret_ciphertext bytea,
    previous_secret_key_id text,
    previous_secret_expires_at timestamptz,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_webhooks_tenant_idx ON scaivault_webhooks (tenant_id, webhook_id);

-- Subscriptions: an inline read model of Subscription events (scaivault.domain.subscriptions). Owned by
-- identity_id (only the owner polls). Push subscriptions (delivery_type 'webhook') have a url and a sealed secret.
CREATE TABLE IF NOT EXISTS scaivault_subscriptions (
    subscription_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text NOT NULL,
    identity_id text NOT NULL,
    name text NOT NULL,
    paths text[] NOT NULL,
    events text[] NOT NULL,
    filters jsonb NOT NULL,
    delivery_type text NOT NULL,
    url text,
    secret_ciphertext bytea,
    secret_key_id text,
    buffer_size integer NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_subscriptions_tenant_idx ON scaivault_subscriptions (tenant_id, subscription_id);

-- The catch-up projection 'fanout' (projections/fanout/): every public event, in log order (position), with its
-- envelope as delivered. Webhook deliveries and subscription queues point into it. Old entries are trimmed by
-- housekeeping (SCAIVAULT_EVENT_FEED_RETENTION) once nothing waits on them.
CREATE TABLE IF NOT EXISTS scaivault_event_feed (
    position bigserial PRIMARY KEY,
    event_id text COLLATE "C" NOT NULL UNIQUE,
    notification_id bigint NOT NULL,
    tenant_id text,
    partner_id text,
    event_type text NOT NULL,
    path text COLLATE "C",
    secret_type text,
    tags text[] NOT NULL DEFAULT '{}',
    envelope jsonb NOT NULL,
    recorded_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_event_feed_recorded_idx ON scaivault_event_feed (recorded_at);

-- What the fan-out remembers of each stream: its subject (whose, which path or id) and, for secrets, the last
-- version, type and tags, as of the events it has read. Streams created before the fan-out started are looked up
-- in the other read models the first time they are seen.
CREATE TABLE IF NOT EXISTS scaivault_fanout_streams (
    stream_id uuid PRIMARY KEY,
    tenant_id text,
    partner_id text,
    path text COLLATE "C",
    name text,
    version integer,
    secret_type text,
    tags text[] NOT NULL DEFAULT '{}'
);

-- The outbox: one row per (target, public event) to deliver over HTTP. target_kind 'webhook' (target_id wh_...)
-- or 'subscription' (a push subscription, sub_...). Created by the fan-out projection in its tracking transaction,
-- so no event is lost between a command's commit and its delivery. The dispatcher (scaivault/webhooks/) claims
-- due rows (FOR UPDATE SKIP LOCKED) and records each attempt; per (target, ordering_key) rows go out in
-- feed order, one at a time. status: pending (waiting or retrying), success, failed (dead letter: every try
-- failed). Operational state, not a read model: it is never rebuilt from the log (a rebuild would send again).
CREATE TABLE IF NOT EXISTS scaivault_webhook_deliveries (
    delivery_id text COLLATE "C" PRIMARY KEY,
    target_kind text NOT NULL,
    target_id text COLLATE "C" NOT NULL,
    tenant_id text NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    event_type text NOT NULL,
    feed_position bigint,
    ordering_key text NOT NULL,
    is_test boolean NOT NULL DEFAULT false,
    status text NOT NULL,
    -- The head of its lane (target, ordering_key): the only pending row of the lane the dispatcher may claim
    -- (scaivault/webhooks/outbox.py keeps it so).
    ready boolean NOT NULL DEFAULT true,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    last_attempt_at timestamptz,
    response_code integer,
    error text,
    duration_ms integer,
    created_at timestamptz NOT NULL,
    completed_at timestamptz,
    UNIQUE (target_kind, target_id, event_id)
);
CREATE INDEX IF NOT EXISTS scaivault_webhook_deliveries_due_idx
    ON scaivault_webhook_deliveries (next_attempt_at) WHERE status = 'pending' AND ready;
CREATE INDEX IF NOT EXISTS scaivault_webhook_deliveries_order_idx
    ON scaivault_webhook_deliveries (target_kind, target_id, ordering_key, feed_position) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS scaivault_webhook_deliveries_target_idx
    ON scaivault_webhook_deliveries (target_kind, target_id, delivery_id);
-- Trimming the feed asks whether a delivery still points at an entry.
CREATE INDEX IF NOT EXISTS scaivault_webhook_deliveries_feed_idx ON scaivault_webhook_deliveries (feed_position);

-- A polling subscription's queue: the feed entries it has not acknowledged, at most its buffer_size (the oldest
-- give way, counted in dropped_events). delivered_at: first handed to a poll.
CREATE TABLE IF NOT EXISTS scaivault_subscription_queue (
    subscription_id text COLLATE "C" NOT NULL,
    feed_position bigint NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    delivered_at timestamptz,
    PRIMARY KEY (subscription_id, feed_position)
);
CREATE INDEX IF NOT EXISTS scaivault_subscription_queue_feed_idx ON scaivault_subscription_queue (feed_position);
CREATE TABLE IF NOT EXISTS scaivault_subscription_queue_state (
    subscription_id text COLLATE "C" PRIMARY KEY,
    queued integer NOT NULL DEFAULT 0,
    dropped_events bigint NOT NULL DEFAULT 0,
    last_dropped_at timestamptz
);

-- The fan-out starts at the log's head: events committed before this migration are history, not news.
INSERT INTO scaivault_tracking (application_name, notification_id)
SELECT 'fanout', COALESCE(max(notification_id), 0) FROM scaivault_events
ON CONFLICT (application_name) DO NOTHING;
