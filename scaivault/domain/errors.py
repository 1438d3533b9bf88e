"""The stable error vocabulary (spec reference/error-codes). Every error the API returns is one of these.

Each error carries its spec ``code``, a message that is safe to show and log (never a secret value, token or key),
and optional ``details``. The HTTP status for each code lives with the HTTP front end.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ScaiVaultError(Exception):
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "An internal error occurred"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or self.default_message
        self.details = {key: value for key, value in details.items() if value is not None}
        super().__init__(self.message)


def _error(name: str, code: str, message: str) -> type[ScaiVaultError]:
    return type(name, (ScaiVaultError,), {"code": code, "default_message": message})


# Authentication (401)
AuthenticationRequired = _error("AuthenticationRequired", "authentication_required", "Authentication is required")
TokenExpired = _error("TokenExpired", "token_expired", "The token has expired")
TokenInvalid = _error("TokenInvalid", "token_invalid", "The token could not be verified")
TokenRevoked = _error("TokenRevoked", "token_revoked", "The token was revoked")
TokenIssuerInvalid = _error("TokenIssuerInvalid", "token_issuer_invalid", "The token was issued by an untrusted issuer")
TokenAlgorithmNotAllowed = _error(
    "TokenAlgorithmNotAllowed", "token_algorithm_not_allowed", "The token's signing algorithm is not accepted"
)
TokenAudienceInvalid = _error("TokenAudienceInvalid", "token_audience_invalid", "The token is not meant for this service")

# Authorization (403)
AccessDenied = _error("AccessDenied", "access_denied", "Access denied")
InsufficientScope = _error("InsufficientScope", "insufficient_scope", "The token's scopes do not cover this request")
TenantAccessDenied = _error("TenantAccessDenied", "tenant_access_denied", "Access to this tenant is denied")
Forbidden = _error("Forbidden", "forbidden", "Forbidden")
# Policy conditions (spec reference/error-codes): a rule matched, but one of its conditions did not hold.
IpNotAllowed = _error("IpNotAllowed", "ip_not_allowed", "The caller's IP address is outside the allowed ranges")
MfaRequired = _error("MfaRequired", "mfa_required", "This access needs a recent multi-factor authentication")
TimeWindowViolation = _error(
    "TimeWindowViolation", "time_window_violation", "The request falls outside the allowed time window"
)

# Validation (400 / 422)
InvalidRequest = _error("InvalidRequest", "invalid_request", "The request is malformed")
InvalidPath = _error("InvalidPath", "invalid_path", "The path breaks the path-format rules")
InvalidSecretType = _error("InvalidSecretType", "invalid_secret_type", "Unknown secret_type")
InvalidCursor = _error("InvalidCursor", "invalid_cursor", "The pagination cursor is malformed or expired")
ValidationFailed = _error("ValidationFailed", "validation_error", "Field-level validation failed")
InvalidConfig = _error("InvalidConfig", "invalid_config", "The configuration was rejected")
InvalidRole = _error("InvalidRole", "invalid_role", "The role name is invalid")
InvalidPolicy = _error("InvalidPolicy", "invalid_policy", "The policy's rules or bindings are invalid")


class InvalidDuration(ScaiVaultError):
    code = "invalid_duration"
    default_message = "A duration string could not be parsed"

    def __init__(self, value: str, field: str | None = None) -> None:
        super().__init__(
            f"Invalid duration {value!r}: use a positive whole number and a unit s, m, h, d or w (e.g. 90d)"[:200],
            value=value[:64] if isinstance(value, str) else None,
            field=field,
        )


# Not found (404)
SecretNotFound = _error("SecretNotFound", "secret_not_found", "No secret at that path")
VersionNotFound = _error("VersionNotFound", "version_not_found", "That version does not exist or is no longer kept")
TenantNotFound = _error("TenantNotFound", "tenant_not_found", "Tenant not found")
IdentityNotFound = _error("IdentityNotFound", "identity_not_found", "No such identity in this tenant")
PolicyNotFound = _error("PolicyNotFound", "policy_not_found", "No policy with that id")
BindingNotFound = _error("BindingNotFound", "binding_not_found", "No binding with that id on this policy")
ExportNotFound = _error("ExportNotFound", "export_not_found", "No audit export with that id")
RouteNotFound = _error("RouteNotFound", "not_found", "No such endpoint")
MethodNotAllowed = _error("MethodNotAllowed", "method_not_allowed", "Method not allowed on this endpoint")

# Conflict (409)
SecretExists = _error(
    "SecretExists", "secret_exists", "The path is soft-deleted and still in its retention period; restore it first"
)
VersionConflict = _error("VersionConflict", "version_conflict", "The secret was changed concurrently")
IdentityExists = _error("IdentityExists", "identity_exists", "An identity with that name already exists in this tenant")
PolicyInUse = _error("PolicyInUse", "policy_in_use", "The policy still has bindings; remove them or use force=true")
BindingExists = _error("BindingExists", "binding_exists", "The identity is already bound to this policy")

# ScaiKey webhook deliveries (401): an unsigned, forged or stale delivery is refused before it is read.
SignatureInvalid = _error("SignatureInvalid", "signature_invalid", "The webhook signature did not verify")
SignatureExpired = _error("SignatureExpired", "signature_expired", "The webhook timestamp is outside the accepted window")

# Size / availability
PayloadTooLarge = _error("PayloadTooLarge", "payload_too_large", "The request body is too large")
RateLimited = _error("RateLimited", "rate_limited", "Too many requests: wait as long as the Retry-After header says")
ServiceUnavailable = _error("ServiceUnavailable", "service_unavailable", "The service is temporarily unavailable")
InternalError = _error("InternalError", "internal_error", "An internal error occurred")
