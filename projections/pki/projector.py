"""The PKI read models (inline: written in the transaction that appends the events).

A CA's revocation marks every certificate it signed (and, through its descendants' own ``Revoked`` events, theirs)
in the same transaction: status answers never lag the fact.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.pki import Certificate, CertificateAuthority, PkiRole, counter_shard

CA_EVENTS = (
    CertificateAuthority.Created, CertificateAuthority.SignedCertificateImported, CertificateAuthority.CrlPublished,
    CertificateAuthority.Revoked,
)
ROLE_EVENTS = (PkiRole.Created, PkiRole.Updated, PkiRole.Deleted)
CERTIFICATE_EVENTS = (
    Certificate.Issued, Certificate.Revoked, Certificate.Renewed, Certificate.RenewalFailed, Certificate.ExpiryWarned,
)
PKI_EVENTS = CA_EVENTS + ROLE_EVENTS + CERTIFICATE_EVENTS


async def project_pki_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, Certificate.Issued):
        await conn.execute(
            """INSERT INTO scaivault_pki_certificates (certificate_id, stream_id, owner, ca_id, role_name,
                   serial_number, common_name, dns_names, ip_sans, not_before, not_after, certificate_pem, chain_pems,
                   fingerprint_sha256, key_type, key_bits, source, crl_partition, key_ciphertext, key_data_key_id,
                   renewal_of, issued_at, issued_by, warn_at, renew_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                   $21, $22, $23, $24, $25)""",
            e.certificate_id, e.originator_id, e.owner, e.ca_id, e.role_name, e.serial_number, e.common_name,
            e.dns_names, e.ip_sans, e.not_before, e.not_after, e.certificate_pem, e.chain_pems,
            e.fingerprint_sha256, e.key_type, e.key_bits, e.source, e.crl_partition, e.key_ciphertext,
            e.key_data_key_id, e.renewal_of, e.at, e.actor, e.warn_at, e.renew_at,
        )
        if e.ca_id is not None:
            await conn.execute(
                """INSERT INTO scaivault_pki_ca_counters (ca_id, shard, issued) VALUES ($1, $2, 1)
                   ON CONFLICT (ca_id, shard) DO UPDATE SET issued = scaivault_pki_ca_counters.issued + 1""",
                e.ca_id, counter_shard(e.certificate_id),
            )
    elif isinstance(e, Certificate.Revoked):
        await conn.execute(
            """UPDATE scaivault_pki_certificates SET revoked_at = $2, revocation_reason = $3, warn_at = NULL,
                   renew_at = NULL WHERE stream_id = $1""",
            e.originator_id, e.at, e.reason,
        )
    elif isinstance(e, Certificate.Renewed):
        await conn.execute(
            """UPDATE scaivault_pki_certificates SET renewed_by = $2, warn_at = NULL, renew_at = NULL
               WHERE stream_id = $1""",
            e.originator_id, e.renewed_by,
        )
    elif isinstance(e, Certificate.RenewalFailed):
        await conn.execute(
            "UPDATE scaivault_pki_certificates SET renew_at = NULL WHERE stream_id = $1", e.originator_id
        )
    elif isinstance(e, Certificate.ExpiryWarned):
        await conn.execute(
            "UPDATE scaivault_pki_certificates SET warn_at = NULL WHERE stream_id = $1", e.originator_id
        )
    elif isinstance(e, CertificateAuthority.Created):
        await conn.execute(
            """INSERT INTO scaivault_pki_cas (ca_id, stream_id, owner, partner_id, name, common_name, ca_type,
                   parent_ca_id, key_type, key_bits, status, certificate_pem, chain_pems, csr_pem, serial_number,
                   not_before, not_after, key_ciphertext, key_data_key_id, created_at, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                   $21)""",
            e.ca_id, e.originator_id, e.owner, e.partner_id, e.name, e.common_name, e.ca_type, e.parent_ca_id,
            e.key_type, e.key_bits, e.status, e.certificate_pem, e.chain_pems, e.csr_pem, e.serial_number,
            e.not_before, e.not_after, e.key_ciphertext, e.key_data_key_id, e.at, e.actor,
        )
    elif isinstance(e, CertificateAuthority.SignedCertificateImported):
        await conn.execute(
            """UPDATE scaivault_pki_cas SET status = 'active', certificate_pem = $2, chain_pems = $3,
                   serial_number = $4, not_before = $5, not_after = $6 WHERE stream_id = $1""",
            e.originator_id, e.certificate_pem, e.chain_pems, e.serial_number, e.not_before, e.not_after,
        )
    elif isinstance(e, CertificateAuthority.CrlPublished):
        await conn.execute(
            """INSERT INTO scaivault_pki_crls (ca_id, partition, crl_number, this_update, next_update, entries, der)
               SELECT ca_id, $2, $3, $4, $5, $6, $7 FROM scaivault_pki_cas WHERE stream_id = $1
               ON CONFLICT (ca_id, partition) DO UPDATE SET crl_number = EXCLUDED.crl_number,
                   this_update = EXCLUDED.this_update, next_update = EXCLUDED.next_update,
                   entries = EXCLUDED.entries, der = EXCLUDED.der""",
            e.originator_id, e.partition, e.crl_number, e.this_update, e.next_update, e.entries, e.der,
        )
    elif isinstance(e, CertificateAuthority.Revoked):
        ca_id = await conn.fetchval(
            """UPDATE scaivault_pki_cas SET status = 'revoked', revoked_at = $2, revocation_reason = $3
               WHERE stream_id = $1 RETURNING ca_id""",
            e.originator_id, e.at, e.reason,
        )
        # Everything it signed is revoked with it; the certificates keep their own reason if they had one.
        await conn.execute(
            """UPDATE scaivault_pki_certificates SET revoked_at = $2, revocation_reason = 'ca_compromise',
                   warn_at = NULL, renew_at = NULL
               WHERE ca_id = $1 AND revoked_at IS NULL""",
            ca_id, e.at,
        )
    elif isinstance(e, PkiRole.Created):
        await conn.execute(
            """INSERT INTO scaivault_pki_roles (role_id, stream_id, owner, name, ca_id, settings, created_at,
                   created_by, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $8)""",
            e.role_id, e.originator_id, e.owner, e.name, e.ca_id, e.settings, e.at, e.actor,
        )
    elif isinstance(e, PkiRole.Updated):
        await conn.execute(
            """UPDATE scaivault_pki_roles SET ca_id = $2, settings = $3, updated_at = $4, updated_by = $5
               WHERE stream_id = $1""",
            e.originator_id, e.ca_id, e.settings, e.at, e.actor,
        )
    elif isinstance(e, PkiRole.Deleted):
        await conn.execute("DELETE FROM scaivault_pki_roles WHERE stream_id = $1", e.originator_id)
