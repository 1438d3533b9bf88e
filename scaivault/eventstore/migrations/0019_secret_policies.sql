-- Secret policies (value-generation recipes): an inline read model of SecretPolicy events
-- (scaivault.domain.secret_policies), written in the transaction that appends them. owner is the tenant id.
CREATE TABLE IF NOT EXISTS scaivault_secret_policies (
    policy_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    owner text NOT NULL,
    partner_id text NOT NULL,
    tenant_id text,
    name text NOT NULL,
    policy_type text NOT NULL,
    description text,
    fields jsonb NOT NULL,
    is_active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
-- Listing: an owner's secret policies in id order (ids sort by creation time).
CREATE INDEX IF NOT EXISTS scaivault_secret_policies_owner_idx ON scaivault_secret_policies (owner, policy_id);
-- Deleting a secret policy counts the secrets still linked to it.
CREATE INDEX IF NOT EXISTS scaivault_secrets_secret_policy_idx ON scaivault_secrets (owner, secret_policy_id)
    WHERE secret_policy_id IS NOT NULL;
