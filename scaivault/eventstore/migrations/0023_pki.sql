-- The internal PKI's read models (scaivault.domain.pki), inline: written in the transaction that appends the events.
-- owner is the tenant id.
CREATE TABLE IF NOT EXISTS scaivault_pki_cas (
    ca_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    owner text NOT NULL,
    partner_id text NOT NULL,
    name text NOT NULL,
    common_name text NOT NULL,
    ca_type text NOT NULL,
    parent_ca_id text,
    key_type text NOT NULL,
    key_bits integer NOT NULL,
    status text NOT NULL,
    certificate_pem text,
    chain_pems jsonb NOT NULL,
    csr_pem text,
    serial_number text,
    not_before timestamptz,
    not_after timestamptz,
    key_ciphertext bytea NOT NULL,
    key_data_key_id text NOT NULL,
    revoked_at timestamptz,
    revocation_reason text,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    CONSTRAINT scaivault_pki_cas_name_key UNIQUE (owner, name)
);
CREATE INDEX IF NOT EXISTS scaivault_pki_cas_owner_idx ON scaivault_pki_cas (owner, ca_id);
CREATE INDEX IF NOT EXISTS scaivault_pki_cas_parent_idx ON scaivault_pki_cas (parent_ca_id) WHERE parent_ca_id IS NOT NULL;

-- How many certificates each CA issued, in shards: concurrent issuances under one CA do not queue on one row.
CREATE TABLE IF NOT EXISTS scaivault_pki_ca_counters (
    ca_id text COLLATE "C" NOT NULL,
    shard smallint NOT NULL,
    issued bigint NOT NULL,
    PRIMARY KEY (ca_id, shard)
);

CREATE TABLE IF NOT EXISTS scaivault_pki_roles (
    role_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    owner text NOT NULL,
    name text COLLATE "C" NOT NULL,
    ca_id text NOT NULL,
    settings jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    CONSTRAINT scaivault_pki_roles_name_key UNIQUE (owner, name)
);

CREATE TABLE IF NOT EXISTS scaivault_pki_certificates (
    certificate_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    owner text NOT NULL,
    ca_id text,
    role_name text,
    serial_number text COLLATE "C" NOT NULL,
    common_name text,
    dns_names text[] NOT NULL,
    ip_sans text[] NOT NULL,
    not_before timestamptz NOT NULL,
    not_after timestamptz NOT NULL,
    certificate_pem text NOT NULL,
    chain_pems jsonb NOT NULL,
    fingerprint_sha256 text NOT NULL,
    key_type text NOT NULL,
    key_bits integer NOT NULL,
    source text NOT NULL,
    crl_partition text,
    key_ciphertext bytea,
    key_data_key_id text,
    renewal_of text,
    renewed_by text,
    -- When the scheduler announces the coming expiry, and renews it (auto_renew roles); NULL once done or moot.
    warn_at timestamptz,
    renew_at timestamptz,
    revoked_at timestamptz,
    revocation_reason text,
    issued_at timestamptz NOT NULL,
    issued_by text NOT NULL
);
-- Listing: a tenant's certificates in id order (ids sort by issuance time), all or one CA's.
CREATE INDEX IF NOT EXISTS scaivault_pki_certificates_owner_idx ON scaivault_pki_certificates (owner, certificate_id);
CREATE INDEX IF NOT EXISTS scaivault_pki_certificates_ca_idx ON scaivault_pki_certificates (ca_id, certificate_id);
-- OCSP and revocation look certificates up by (CA, serial).
CREATE UNIQUE INDEX IF NOT EXISTS scaivault_pki_certificates_serial_idx
    ON scaivault_pki_certificates (ca_id, serial_number);
-- Expiring soon (listing filter, expiry notices, renewal): by expiry, live ones only.
CREATE INDEX IF NOT EXISTS scaivault_pki_certificates_expiry_idx
    ON scaivault_pki_certificates (owner, not_after) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS scaivault_pki_certificates_warn_idx
    ON scaivault_pki_certificates (warn_at) WHERE warn_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS scaivault_pki_certificates_renew_idx
    ON scaivault_pki_certificates (renew_at) WHERE renew_at IS NOT NULL;
-- CRLs list the revoked, unexpired certificates of a CA (or of one partition): a small index however many live.
CREATE INDEX IF NOT EXISTS scaivault_pki_certificates_revoked_idx
    ON scaivault_pki_certificates (ca_id, crl_partition, not_after) WHERE revoked_at IS NOT NULL;

-- The CRLs last published, per CA and partition ('' = the complete CRL).
CREATE TABLE IF NOT EXISTS scaivault_pki_crls (
    ca_id text COLLATE "C" NOT NULL,
    partition text COLLATE "C" NOT NULL,
    crl_number bigint NOT NULL,
    this_update timestamptz NOT NULL,
    next_update timestamptz NOT NULL,
    entries integer NOT NULL,
    der bytea NOT NULL,
    PRIMARY KEY (ca_id, partition)
);
CREATE INDEX IF NOT EXISTS scaivault_pki_crls_next_update_idx ON scaivault_pki_crls (next_update);
