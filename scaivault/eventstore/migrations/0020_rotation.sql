-- Rotation policies and the per-secret rotation and expiry schedules (docs/rotation.md): inline read models of
-- RotationPolicy events (scaivault.domain.rotation) and of Secret events, written in the transaction that appends
-- them. The schedule says when a scheduler step may next be needed; the step itself is decided by the Secret
-- aggregate, so the schedule only has to be early, never exact.
CREATE TABLE IF NOT EXISTS scaivault_rotation_policies (
    policy_id text COLLATE "C" NOT NULL,
    owner text NOT NULL,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text NOT NULL,
    name text NOT NULL,
    description text,
    interval text NOT NULL,
    interval_seconds bigint NOT NULL,
    grace_period text NOT NULL,
    warn_before text[] NOT NULL,
    auto_generate boolean NOT NULL,
    secret_policy_id text,
    webhook_ids text[] NOT NULL,
    is_active boolean NOT NULL,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL,
    PRIMARY KEY (owner, policy_id)
);
-- Names are unique within a tenant (a concurrent create of the same name conflicts here and is retried).
CREATE UNIQUE INDEX IF NOT EXISTS scaivault_rotation_policies_name_key ON scaivault_rotation_policies (owner, name);

CREATE TABLE IF NOT EXISTS scaivault_secret_schedules (
    stream_id uuid PRIMARY KEY,
    owner text NOT NULL,
    tenant_id text,
    path text NOT NULL,
    live boolean NOT NULL DEFAULT false,
    deleted boolean NOT NULL DEFAULT false,
    metadata jsonb NOT NULL DEFAULT '{}',
    current_version integer NOT NULL DEFAULT 0,
    rotation_policy_id text,
    rotation_cycle_start timestamptz,
    rotation_warned text[] NOT NULL DEFAULT '{}',
    rotation_pending_due_at timestamptz,
    rotation_overdue boolean NOT NULL DEFAULT false,
    last_rotated_at timestamptz,
    rotation_due_at timestamptz,
    next_rotation_step_at timestamptz,
    expires_at timestamptz,
    expiry_warned text[] NOT NULL DEFAULT '{}',
    expired_notified boolean NOT NULL DEFAULT false,
    next_expiry_step_at timestamptz
);
CREATE INDEX IF NOT EXISTS scaivault_secret_schedules_rotation_idx ON scaivault_secret_schedules (next_rotation_step_at)
    WHERE next_rotation_step_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS scaivault_secret_schedules_expiry_idx ON scaivault_secret_schedules (next_expiry_step_at)
    WHERE next_expiry_step_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS scaivault_secret_schedules_policy_idx ON scaivault_secret_schedules (owner, rotation_policy_id);

-- One row per rotation of a secret: pending (the owner was asked for a value), success, failed.
CREATE TABLE IF NOT EXISTS scaivault_rotation_history (
    id text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    policy_id text NOT NULL,
    stream_id uuid NOT NULL,
    path text NOT NULL,
    status text NOT NULL,
    old_version integer,
    new_version integer,
    auto_generated boolean,
    error jsonb,
    due_at timestamptz,
    grace_period_ends timestamptz,
    started_at timestamptz NOT NULL,
    completed_at timestamptz,
    triggered_by text NOT NULL
);
CREATE INDEX IF NOT EXISTS scaivault_rotation_history_policy_idx ON scaivault_rotation_history (owner, policy_id, id);

-- A version superseded by a rotation is readable until its grace period ends (NULL: no such limit).
ALTER TABLE scaivault_secret_versions ADD COLUMN IF NOT EXISTS readable_until timestamptz;

-- Secrets written before this migration: their schedule rows, so that their expiry is looked at by the first scan
-- (the Secret aggregate then decides what is due; a rebuild of the rotation read model gives the exact rows).
INSERT INTO scaivault_secret_schedules (stream_id, owner, tenant_id, path, live, deleted, metadata, current_version,
                                        rotation_policy_id, expires_at, next_expiry_step_at)
SELECT stream_id, owner, tenant_id, path, true, deleted_at IS NOT NULL, metadata, current_version, rotation_policy_id,
       expires_at, CASE WHEN expires_at IS NOT NULL AND deleted_at IS NULL THEN now() END
FROM scaivault_secrets
ON CONFLICT (stream_id) DO NOTHING;
