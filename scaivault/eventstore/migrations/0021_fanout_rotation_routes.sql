-- The webhooks a rotation policy names (webhook_ids) receive the rotation events of the secrets it governs
-- (docs/rotation.md, "Webhooks of a policy"). The fan-out projection (projections/fanout/rotation_routes.py) keeps
-- its own copy of each policy's webhook_ids, from the RotationPolicy events it reads in log order and in its tracking
-- transaction, so routing never depends on how far another read model has got. One row per live policy, keyed by
-- the policy's stream (rotation_policy_stream_id(tenant, policy id)); a deleted policy's row goes.
CREATE TABLE IF NOT EXISTS scaivault_fanout_rotation_routes (
    stream_id uuid PRIMARY KEY,
    tenant_id text,
    policy_id text,
    webhook_ids text[] NOT NULL DEFAULT '{}'
);

-- Policies written before this migration: as the rotation read model (inline, at the log's head) has them. Their
-- events the fan-out has not read yet are applied over these rows in log order as it reaches them.
INSERT INTO scaivault_fanout_rotation_routes (stream_id, tenant_id, policy_id, webhook_ids)
SELECT stream_id, tenant_id, policy_id, webhook_ids FROM scaivault_rotation_policies
ON CONFLICT (stream_id) DO NOTHING;
