"""HTTP status codes: of each error code (spec reference/error-codes and the spec README's decisions), and of each
command outcome."""

from __future__ import annotations

from scaivault.domain.outcomes import Outcome

STATUS_BY_CODE: dict[str, int] = {
    "authentication_required": 401,
    "token_expired": 401,
    "token_invalid": 401,
    "token_revoked": 401,
    "token_issuer_invalid": 401,
    "token_algorithm_not_allowed": 401,
    "token_audience_invalid": 401,
    "signature_invalid": 401,
    "signature_expired": 401,
    "access_denied": 403,
    "insufficient_scope": 403,
    "mfa_required": 403,
    "ip_not_allowed": 403,
    "time_window_violation": 403,
    "tenant_access_denied": 403,
    "forbidden": 403,
    "invalid_request": 400,
    "invalid_path": 400,
    "invalid_secret_type": 400,
    "invalid_duration": 400,
    "invalid_cursor": 400,
    "invalid_config": 400,
    "invalid_role": 400,
    "invalid_policy": 400,
    "invalid_glob": 400,
    "invalid_csr": 400,
    "invalid_certificate": 400,
    "validation_error": 422,
    "not_found": 404,
    "secret_not_found": 404,
    "version_not_found": 404,
    "tenant_not_found": 404,
    "export_not_found": 404,
    "identity_not_found": 404,
    "policy_not_found": 404,
    "binding_not_found": 404,
    "webhook_not_found": 404,
    "delivery_not_found": 404,
    "subscription_not_found": 404,
    "secret_policy_not_found": 404,
    "rotation_policy_not_found": 404,
    "dns_provider_not_found": 404,
    "ca_not_found": 404,
    "certificate_not_found": 404,
    "csr_not_found": 404,
    "trust_anchor_not_found": 404,
    "acme_account_not_found": 404,
    "acme_order_not_found": 404,
    "role_not_found": 404,
    "engine_not_found": 404,
    "lease_not_found": 404,
    "method_not_allowed": 405,
    "secret_exists": 409,
    "version_conflict": 409,
    "rotation_policy_exists": 409,
    "identity_exists": 409,
    "policy_in_use": 409,
    "binding_exists": 409,
    "quota_exceeded": 409,
    "dns_provider_exists": 409,
    "ca_exists": 409,
    "role_exists": 409,
    "engine_exists": 409,
    "engine_in_use": 409,
    "lease_not_renewable": 409,
    "ca_not_active": 409,
    "csr_not_pending": 409,
    "trust_anchor_exists": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "internal_error": 500,
    "service_unavailable": 503,
}


STATUS_BY_OUTCOME: dict[Outcome, int] = {
    Outcome.OK: 200, Outcome.CREATED: 201, Outcome.ACCEPTED: 202, Outcome.REMOVED: 204,
}


def status_of(code: str) -> int:
    """The status of an error code (500 for a code without one: a bug, never a success)."""
    return STATUS_BY_CODE.get(code, 500)


def status_of_outcome(outcome: Outcome) -> int:
    return STATUS_BY_OUTCOME[outcome]
