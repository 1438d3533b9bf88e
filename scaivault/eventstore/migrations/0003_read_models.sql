-- Read models written in the same transaction as the events they are built from (inline projections),
-- and the access records every request leaves behind (the audit trail's raw material).

CREATE TABLE IF NOT EXISTS scaivault_partners (
    partner_id text PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS scaivault_tenants (
    tenant_id text PRIMARY KEY,
    partner_id text NOT NULL,
    name text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_tenants_partner_idx ON scaivault_tenants (partner_id);

-- Every secret stream ever created: its address. Events after Secret.Created carry only the stream id.
CREATE TABLE IF NOT EXISTS scaivault_secret_streams (
    stream_id uuid PRIMARY KEY,
    owner text NOT NULL,
    path text COLLATE "C" NOT NULL,
    partner_id text NOT NULL,
    tenant_id text
);

-- One row per live or soft-deleted secret. owner is the tenant id, or the partner id for partner secrets.
CREATE TABLE IF NOT EXISTS scaivault_secrets (
    owner text NOT NULL,
    path text COLLATE "C" NOT NULL,
    stream_id uuid NOT NULL,
    partner_id text NOT NULL,
    tenant_id text,
    secret_type text NOT NULL,
    current_version integer NOT NULL,
    metadata jsonb NOT NULL,
    max_versions integer NOT NULL,
    expires_at timestamptz,
    rotation_policy_id text,
    secret_policy_id text,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    deleted_at timestamptz,
    recoverable_until timestamptz,
    deleted_by text,
    PRIMARY KEY (owner, path),
    UNIQUE (stream_id)
);
CREATE INDEX IF NOT EXISTS scaivault_secrets_recoverable_idx
    ON scaivault_secrets (recoverable_until) WHERE recoverable_until IS NOT NULL;

-- Retained versions; ciphertext is NULL once destroyed (its data key is gone anyway).
CREATE TABLE IF NOT EXISTS scaivault_secret_versions (
    stream_id uuid NOT NULL,
    version integer NOT NULL,
    ciphertext bytea,
    data_key_id text NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    destroyed_at timestamptz,
    PRIMARY KEY (stream_id, version)
);

-- Derived from the access records (successful value reads), written in the access records' own transaction.
CREATE TABLE IF NOT EXISTS scaivault_secret_last_access (
    stream_id uuid PRIMARY KEY,
    last_accessed_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS scaivault_access_records (
    id bigserial PRIMARY KEY,
    recorded_at timestamptz NOT NULL,
    request_id text NOT NULL,
    partner_id text,
    tenant_id text,
    identity_id text,
    identity_type text,
    action text NOT NULL,
    method text NOT NULL,
    route text NOT NULL,
    secret_path text,
    status integer NOT NULL,
    success boolean NOT NULL,
    error_code text,
    source_ip text,
    user_agent text,
    duration_ms integer NOT NULL,
    extra jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS scaivault_access_records_tenant_idx ON scaivault_access_records (tenant_id, id);
