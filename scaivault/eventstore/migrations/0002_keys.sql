-- Encryption keys (scaivault.crypto.keyring) and tokens (scaivault.auth).
-- No column ever holds a key or token in the clear: keys are wrapped (AES-256-GCM or KMS), PATs are SHA-256 hashes.

-- Partner keys, wrapped by the root key (root_key_id names the root key version used).
CREATE TABLE IF NOT EXISTS scaivault_partner_keys (
    partner_id    text PRIMARY KEY,
    root_provider text NOT NULL,
    root_key_id   text NOT NULL,
    wrapped       bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    rewrapped_at  timestamptz
);

-- Tenant keys, wrapped by their partner's key.
CREATE TABLE IF NOT EXISTS scaivault_tenant_keys (
    tenant_id  text PRIMARY KEY,
    partner_id text NOT NULL REFERENCES scaivault_partner_keys (partner_id) ON DELETE CASCADE,
    wrapped    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS scaivault_tenant_keys_partner_idx ON scaivault_tenant_keys (partner_id);

-- Data keys, one per secret version, wrapped by the owner's (tenant's or partner's) key. Deleting a row shreds it.
CREATE TABLE IF NOT EXISTS scaivault_data_keys (
    id         text PRIMARY KEY,
    owner      text NOT NULL,
    wrapped    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS scaivault_data_keys_owner_idx ON scaivault_data_keys (owner);

-- The built-in token issuer's Ed25519 signing keys; the private key is wrapped by the root key (AAD: the kid).
CREATE TABLE IF NOT EXISTS scaivault_issuer_keys (
    kid                 text PRIMARY KEY,
    algorithm           text NOT NULL DEFAULT 'EdDSA',
    root_key_id         text NOT NULL,
    wrapped_private_key bytea NOT NULL,
    public_jwk          jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    retired_at          timestamptz
);

-- Personal access tokens (skt_...), stored only as the SHA-256 of the token.
CREATE TABLE IF NOT EXISTS scaivault_personal_access_tokens (
    id            text PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    identity_id   text NOT NULL,
    identity_type text NOT NULL,
    display_name  text,
    tenant_id     text,
    partner_id    text,
    scopes        text[] NOT NULL DEFAULT '{}',
    roles         text[] NOT NULL DEFAULT '{}',
    groups        text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS scaivault_pats_identity_idx ON scaivault_personal_access_tokens (identity_id);

-- Revoked JWT ids and PAT ids; servers keep this set in memory, reading only rows with id > the last one seen.
CREATE TABLE IF NOT EXISTS scaivault_token_revocations (
    id         bigserial PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('jti', 'pat')),
    value      text NOT NULL,
    expires_at timestamptz,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, value)
);
