-- DNS providers (ACME DNS-01): an inline read model of DnsProvider events (scaivault.domain.dns_providers), written
-- in the transaction that appends them. The credentials are only here sealed (credentials_ciphertext, under the data
-- key credentials_key_id, destroyed with the provider); answers show credential_fields, the names of the fields.
CREATE TABLE IF NOT EXISTS scaivault_dns_providers (
    provider_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text NOT NULL,
    name text NOT NULL,
    provider_type text NOT NULL,
    description text,
    config jsonb NOT NULL,
    managed_zones text[] NOT NULL,
    is_active boolean NOT NULL,
    credential_fields text[] NOT NULL,
    credentials_ciphertext bytea NOT NULL,
    credentials_key_id text NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
-- Names are unique per tenant (the command checks first, under the tenant's lock; this is the backstop). Listing
-- pages by id within a tenant.
CREATE UNIQUE INDEX IF NOT EXISTS scaivault_dns_providers_name_key ON scaivault_dns_providers (tenant_id, name);
CREATE INDEX IF NOT EXISTS scaivault_dns_providers_tenant_idx ON scaivault_dns_providers (tenant_id, provider_id);
