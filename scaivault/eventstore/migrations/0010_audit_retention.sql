-- Where each audit chain starts once retention has removed its oldest entries: the sequence number and hash of the
-- last removed entry, with a MAC under the audit chain key so the anchor itself cannot be moved unnoticed.
-- Not part of the audit projection's tables: a rebuild continues every chain from its anchor.
CREATE TABLE IF NOT EXISTS scaivault_audit_anchors (
    chain text PRIMARY KEY,
    seq bigint NOT NULL,
    hash bytea NOT NULL,
    removed_before timestamptz NOT NULL,
    mac bytea NOT NULL
);
