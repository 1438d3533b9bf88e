-- ACME accounts and orders (scaivault.domain.acme): inline read models of their events, written in the transaction
-- that appends them. Account keys are here only sealed (key_ciphertext under the data key key_data_key_id, destroyed
-- when the account is deleted); order rows carry the CA's order state (URLs, statuses), never key material.
CREATE TABLE IF NOT EXISTS scaivault_acme_accounts (
    account_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text NOT NULL,
    name text NOT NULL,
    provider text NOT NULL,
    environment text NOT NULL,
    directory_url text NOT NULL,
    email text,
    account_uri text NOT NULL,
    ca_bundle text,
    status text NOT NULL,
    key_ciphertext bytea,
    key_data_key_id text,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    deactivated_at timestamptz
);
CREATE INDEX IF NOT EXISTS scaivault_acme_accounts_tenant_idx ON scaivault_acme_accounts (tenant_id, account_id);

-- One row per order. next_attempt_at: when a worker should drive it (NULL once terminal); renew_at: when the
-- certificate it issued is to be renewed (NULL unless auto_renew, or while a renewal order runs).
CREATE TABLE IF NOT EXISTS scaivault_acme_orders (
    order_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    account_id text NOT NULL,
    names text[] NOT NULL,
    challenge_type text NOT NULL,
    dns_provider_id text,
    key_type text NOT NULL,
    secret_path text NOT NULL,
    auto_renew boolean NOT NULL,
    renew_before_seconds bigint NOT NULL,
    renewal_of text,
    status text NOT NULL,
    step text NOT NULL,
    state jsonb,
    challenges jsonb NOT NULL DEFAULT '[]',
    error jsonb,
    attempts integer NOT NULL DEFAULT 0,
    certificate_id text,
    next_attempt_at timestamptz,
    renew_at timestamptz,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_acme_orders_tenant_idx ON scaivault_acme_orders (tenant_id, order_id);
CREATE INDEX IF NOT EXISTS scaivault_acme_orders_due_idx ON scaivault_acme_orders (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS scaivault_acme_orders_renew_idx ON scaivault_acme_orders (renew_at)
    WHERE renew_at IS NOT NULL;

-- http-01 tokens being presented, so that every server process answers /.well-known/acme-challenge/{token}.
CREATE TABLE IF NOT EXISTS scaivault_acme_http01_tokens (
    token text COLLATE "C" PRIMARY KEY,
    order_id text NOT NULL,
    key_authorization text NOT NULL,
    created_at timestamptz NOT NULL
);
