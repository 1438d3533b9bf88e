-- Audit export jobs: an inline read model of AuditExport events (scaivault.domain.audit_exports), written in the
-- transaction that appends them. Never holds credentials: an S3 destination names the secret that holds them.
CREATE TABLE IF NOT EXISTS scaivault_audit_exports (
    export_id text COLLATE "C" PRIMARY KEY,
    stream_id uuid NOT NULL UNIQUE,
    tenant_id text NOT NULL,
    partner_id text,
    status text NOT NULL,
    format text NOT NULL,
    range_from timestamptz NOT NULL,
    range_to timestamptz NOT NULL,
    filters jsonb NOT NULL,
    destination jsonb NOT NULL,
    estimated_records bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    manifest jsonb,
    error text,
    created_at timestamptz NOT NULL,
    created_by text NOT NULL,
    request_id text,
    started_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz,
    updated_at timestamptz NOT NULL
);
-- Listing: a tenant's exports, newest first (export ids sort by creation time).
CREATE INDEX IF NOT EXISTS scaivault_audit_exports_tenant_idx ON scaivault_audit_exports (tenant_id, export_id);
-- The workers' poll: jobs not finished yet.
CREATE INDEX IF NOT EXISTS scaivault_audit_exports_open_idx ON scaivault_audit_exports (export_id)
    WHERE status IN ('pending', 'running');
