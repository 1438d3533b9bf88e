-- The identity mirror (spec reference/identity): inline read models of the events in scaivault.domain.identities,
-- written in the transaction that appends them. Every row belongs to one tenant (partners and tenants aside), and
-- every query a caller can reach names that tenant.
CREATE TABLE IF NOT EXISTS scaivault_identity_partners (
    partner_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    name text NOT NULL,
    slug text,
    region text,
    status text NOT NULL,
    last_synced_at timestamptz,
    updated_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS scaivault_identity_tenants (
    tenant_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    partner_id text NOT NULL,
    name text NOT NULL,
    slug text,
    region text,
    status text NOT NULL,
    last_synced_at timestamptz,
    updated_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS scaivault_identity_users (
    tenant_id text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    stream_id uuid NOT NULL UNIQUE,
    email text NOT NULL,
    principal_ref text COLLATE "C" NOT NULL,  -- 'user:' || email: the identity id tokens carry
    display_name text NOT NULL,
    status text NOT NULL,
    mfa_enabled boolean NOT NULL,
    roles text[] NOT NULL DEFAULT '{}',
    roles_set_locally boolean NOT NULL DEFAULT false,
    source text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_synced_at timestamptz,
    PRIMARY KEY (tenant_id, user_id)
);
-- Not unique: ScaiKey is the authority on its own users, and a rename can pass through a duplicate mid-sync;
-- creating a user through ScaiVault checks uniqueness under an advisory lock instead.
CREATE INDEX IF NOT EXISTS scaivault_identity_users_ref_idx ON scaivault_identity_users (tenant_id, principal_ref);

CREATE TABLE IF NOT EXISTS scaivault_identity_groups (
    tenant_id text COLLATE "C" NOT NULL,
    group_id text COLLATE "C" NOT NULL,
    stream_id uuid NOT NULL UNIQUE,
    name text COLLATE "C" NOT NULL,
    description text,
    status text NOT NULL,
    source text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    last_synced_at timestamptz,
    PRIMARY KEY (tenant_id, group_id)
);
CREATE INDEX IF NOT EXISTS scaivault_identity_groups_name_idx ON scaivault_identity_groups (tenant_id, name);

CREATE TABLE IF NOT EXISTS scaivault_identity_members (
    tenant_id text COLLATE "C" NOT NULL,
    group_id text COLLATE "C" NOT NULL,
    user_id text COLLATE "C" NOT NULL,
    membership_type text NOT NULL,
    added_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, group_id, user_id)
);
-- groups_of(): a user's groups, asked when policies are evaluated.
CREATE INDEX IF NOT EXISTS scaivault_identity_members_user_idx ON scaivault_identity_members (tenant_id, user_id);

CREATE TABLE IF NOT EXISTS scaivault_identity_syncs (
    sync_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    partner_id text,
    tenant_id text,
    trigger text NOT NULL,
    status text NOT NULL,
    stats jsonb,
    error text,
    requested_by text NOT NULL,
    request_id text,
    started_at timestamptz NOT NULL,
    finished_at timestamptz
);

-- Replay protection for ScaiKey webhook deliveries: the event ids seen within the accepted timestamp window.
-- Not a read model (nothing to rebuild): a delivery older than the window is refused by its timestamp anyway.
CREATE TABLE IF NOT EXISTS scaivault_identity_webhook_deliveries (
    event_id text COLLATE "C" PRIMARY KEY,
    received_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_identity_webhook_deliveries_age_idx
    ON scaivault_identity_webhook_deliveries (received_at);
