-- Access policies and their bindings: an inline read model of Policy events (scaivault.domain.policies), written in
-- the transaction that appends them. owner is the tenant id of a tenant-scoped policy, the partner id of a
-- partner-scoped one.
CREATE TABLE IF NOT EXISTS scaivault_policies (
    policy_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    scope text NOT NULL,
    owner text NOT NULL,
    partner_id text NOT NULL,
    tenant_id text,
    name text NOT NULL,
    description text,
    rules jsonb NOT NULL,
    rule_count integer NOT NULL,
    is_active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
-- Listing: an owner's policies in id order (ids sort by creation time).
CREATE INDEX IF NOT EXISTS scaivault_policies_owner_idx ON scaivault_policies (owner, policy_id);

CREATE TABLE IF NOT EXISTS scaivault_policy_bindings (
    binding_id text COLLATE "C" PRIMARY KEY,
    policy_id text COLLATE "C" NOT NULL,
    owner text NOT NULL,
    identity_type text NOT NULL,
    identity_id text NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_policy_bindings_policy_idx ON scaivault_policy_bindings (policy_id, binding_id);
-- Evaluation: the bindings naming one identity (or one of its groups) among an owner's policies.
CREATE INDEX IF NOT EXISTS scaivault_policy_bindings_identity_idx ON scaivault_policy_bindings (owner, identity_id);

-- Cache coherence for authorization: a counter per owner (tenant or partner id), raised in the transaction of every
-- change that can alter a decision there (policies, bindings; identity-mirror group memberships). Every server
-- compares it with what its cache was built from (scaivault/auth/authorization.py). Not a read model: nothing is
-- derived from it, and it is never rebuilt.
CREATE TABLE IF NOT EXISTS scaivault_authorization_generations (
    owner text PRIMARY KEY,
    generation bigint NOT NULL
);
