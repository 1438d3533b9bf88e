-- Dynamic secrets: inline read models of DynamicEngine and Lease events (scaivault.domain.dynamic), written in the
-- transaction that appends them. No secret is stored here: engines name the secret of their root credentials, leases
-- the generated user name.
CREATE TABLE IF NOT EXISTS scaivault_dynamic_engines (
    engine_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text NOT NULL,
    name text NOT NULL,
    engine_type text NOT NULL,
    description text,
    config jsonb NOT NULL,
    default_ttl integer NOT NULL,
    max_ttl integer NOT NULL,
    root_rotation_period integer,
    ca_public_key text,
    root_rotated_at timestamptz,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS scaivault_dynamic_engines_name_key ON scaivault_dynamic_engines (tenant_id, name);

CREATE TABLE IF NOT EXISTS scaivault_dynamic_roles (
    engine_id text COLLATE "C" NOT NULL,
    name text COLLATE "C" NOT NULL,
    tenant_id text NOT NULL,
    role jsonb NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (engine_id, name)
);

-- Every lease, active or ended (state: active, revoking (a revocation failed and is retried), revoked).
CREATE TABLE IF NOT EXISTS scaivault_dynamic_leases (
    lease_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text NOT NULL,
    engine_id text NOT NULL,
    engine_name text NOT NULL,
    engine_type text NOT NULL,
    role_name text NOT NULL,
    username text NOT NULL,
    requested_by text NOT NULL,
    issued_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    max_expires_at timestamptz NOT NULL,
    renewable boolean NOT NULL,
    state text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    next_attempt_at timestamptz,
    revoke_reason text,
    revoked_at timestamptz,
    updated_at timestamptz NOT NULL
);
-- The expiry worker's queue: leases not yet revoked, by when they are due (expiry, or the next retry).
CREATE INDEX IF NOT EXISTS scaivault_dynamic_leases_due_idx ON scaivault_dynamic_leases
    ((coalesce(next_attempt_at, expires_at))) WHERE state <> 'revoked';
CREATE INDEX IF NOT EXISTS scaivault_dynamic_leases_tenant_idx ON scaivault_dynamic_leases (tenant_id, lease_id);
CREATE INDEX IF NOT EXISTS scaivault_dynamic_leases_prefix_idx ON scaivault_dynamic_leases
    (tenant_id, engine_name, role_name) WHERE state <> 'revoked';

-- Leases not yet revoked, per role: what the lease explosion guard counts (a row per role, kept by the projector,
-- so counting never scans the leases).
CREATE TABLE IF NOT EXISTS scaivault_dynamic_lease_counts (
    tenant_id text NOT NULL,
    engine_id text COLLATE "C" NOT NULL,
    role_name text COLLATE "C" NOT NULL,
    open_leases integer NOT NULL,
    PRIMARY KEY (tenant_id, engine_id, role_name)
);
