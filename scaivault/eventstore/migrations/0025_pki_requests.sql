-- The PKI's CSR requests and trust anchors (scaivault.domain.pki_requests), inline read models: written in the
-- transaction that appends their events. owner is the tenant id. Both hold public material only (CSRs, CA
-- certificates).
CREATE TABLE IF NOT EXISTS scaivault_pki_csr_requests (
    csr_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    owner text NOT NULL,
    partner_id text NOT NULL,
    role_name text NOT NULL,
    role_id text NOT NULL,
    status text NOT NULL,
    csr_pem text NOT NULL,
    common_name text,
    alt_names text[] NOT NULL,
    ip_sans text[] NOT NULL,
    key_type text NOT NULL,
    key_bits integer NOT NULL,
    ttl text NOT NULL,
    note text,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL,
    decided_by text,
    decided_at timestamptz,
    rejection_reason text,
    certificate_id text
);
-- Listing: a tenant's requests in id order (ids sort by submission time), all or one status; and a requester's own.
CREATE INDEX IF NOT EXISTS scaivault_pki_csr_requests_owner_idx
    ON scaivault_pki_csr_requests (owner, status, csr_id);
CREATE INDEX IF NOT EXISTS scaivault_pki_csr_requests_requester_idx
    ON scaivault_pki_csr_requests (owner, requested_by, csr_id);

CREATE TABLE IF NOT EXISTS scaivault_pki_trust_anchors (
    anchor_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    owner text NOT NULL,
    partner_id text NOT NULL,
    name text NOT NULL,
    description text,
    certificate_pem text NOT NULL,
    subject text NOT NULL,
    issuer text NOT NULL,
    serial_number text NOT NULL,
    not_before timestamptz NOT NULL,
    not_after timestamptz NOT NULL,
    fingerprint_sha256 text NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL
);
-- Names and certificates are unique per tenant (the command checks first, under the tenant's lock; these are the
-- backstop). Listing and the bundle page by id within a tenant.
CREATE UNIQUE INDEX IF NOT EXISTS scaivault_pki_trust_anchors_name_key ON scaivault_pki_trust_anchors (owner, name);
CREATE UNIQUE INDEX IF NOT EXISTS scaivault_pki_trust_anchors_fingerprint_key
    ON scaivault_pki_trust_anchors (owner, fingerprint_sha256);
CREATE INDEX IF NOT EXISTS scaivault_pki_trust_anchors_owner_idx ON scaivault_pki_trust_anchors (owner, anchor_id);
