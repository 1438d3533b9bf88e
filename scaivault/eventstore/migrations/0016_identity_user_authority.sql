-- Each mirrored user's authority: the rank of the strongest actor that set its roles or status (1 tenant_admin,
-- 2 partner_admin, 3 super_admin, ScaiKey or the operator). The record speaks for the token roles up to that rank
-- (scaivault/identity/roles.py). Rows of users created before default to 3, as their events upcast to (see
-- LEGACY_AUTHORITY in scaivault/domain/identities.py): they keep replacing every token role, as they did.
ALTER TABLE scaivault_identity_users
    ADD COLUMN IF NOT EXISTS authority smallint NOT NULL DEFAULT 3 CHECK (authority BETWEEN 0 AND 3);
