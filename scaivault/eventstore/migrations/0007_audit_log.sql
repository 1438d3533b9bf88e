-- Keys the server wraps with the root key for its own use (e.g. the audit chain's MAC key), re-wrapped on root
-- rotation like partner keys.
CREATE TABLE IF NOT EXISTS scaivault_system_keys (
    name text PRIMARY KEY,
    root_key_id text NOT NULL,
    wrapped bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The audit log: one entry per AccessRecorded event, hash-chained per tenant (chain '' holds requests that
-- resolved no tenant). Each entry's hash is an HMAC, under the audit chain key, of the previous entry's hash and
-- the entry's own fields, so a row altered, removed or reordered in the database breaks the chain.
CREATE TABLE IF NOT EXISTS scaivault_audit_log (
    chain text NOT NULL,
    seq bigint NOT NULL,
    notification_id bigint NOT NULL UNIQUE,
    recorded_at timestamptz NOT NULL,
    request_id text NOT NULL,
    partner_id text,
    tenant_id text,
    identity_id text,
    identity_type text,
    action text NOT NULL,
    method text NOT NULL,
    route text NOT NULL,
    secret_path text COLLATE "C",
    status integer NOT NULL,
    success boolean NOT NULL,
    error_code text,
    source_ip text,
    user_agent text,
    duration_ms integer NOT NULL,
    extra jsonb NOT NULL,
    prev_hash bytea NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX IF NOT EXISTS scaivault_audit_log_identity_idx ON scaivault_audit_log (chain, identity_id, seq);
CREATE INDEX IF NOT EXISTS scaivault_audit_log_path_idx ON scaivault_audit_log (chain, secret_path, seq);
CREATE INDEX IF NOT EXISTS scaivault_audit_log_time_idx ON scaivault_audit_log (chain, recorded_at);
CREATE INDEX IF NOT EXISTS scaivault_audit_log_request_idx ON scaivault_audit_log (chain, request_id);

-- Each chain's head: the last entry's sequence number and hash.
CREATE TABLE IF NOT EXISTS scaivault_audit_chains (
    chain text PRIMARY KEY,
    seq bigint NOT NULL,
    head bytea NOT NULL
);
