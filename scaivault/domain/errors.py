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


# Authentication (401)
class AuthenticationRequired(ScaiVaultError):
    code = "authentication_required"
    default_message = "Authentication is required"


class TokenExpired(ScaiVaultError):
    code = "token_expired"
    default_message = "The token has expired"


class TokenInvalid(ScaiVaultError):
    code = "token_invalid"
    default_message = "The token could not be verified"


class TokenRevoked(ScaiVaultError):
    code = "token_revoked"
    default_message = "The token was revoked"


class TokenIssuerInvalid(ScaiVaultError):
    code = "token_issuer_invalid"
    default_message = "The token was issued by an untrusted issuer"


class TokenAlgorithmNotAllowed(ScaiVaultError):
    code = "token_algorithm_not_allowed"
    default_message = "The token's signing algorithm is not accepted"


class TokenAudienceInvalid(ScaiVaultError):
    code = "token_audience_invalid"
    default_message = "The token is not meant for this service"


# Authorization (403)
class AccessDenied(ScaiVaultError):
    code = "access_denied"
    default_message = "Access denied"


class InsufficientScope(ScaiVaultError):
    code = "insufficient_scope"
    default_message = "The token's scopes do not cover this request"


class TenantAccessDenied(ScaiVaultError):
    code = "tenant_access_denied"
    default_message = "Access to this tenant is denied"


class Forbidden(ScaiVaultError):
    code = "forbidden"
    default_message = "Forbidden"


# Policy conditions (spec reference/error-codes): a rule matched, but one of its conditions did not hold.
class IpNotAllowed(ScaiVaultError):
    code = "ip_not_allowed"
    default_message = "The caller's IP address is outside the allowed ranges"


class MfaRequired(ScaiVaultError):
    code = "mfa_required"
    default_message = "This access needs a recent multi-factor authentication"


class TimeWindowViolation(ScaiVaultError):
    code = "time_window_violation"
    default_message = "The request falls outside the allowed time window"


# Validation (400 / 422)
class InvalidRequest(ScaiVaultError):
    code = "invalid_request"
    default_message = "The request is malformed"


class InvalidPath(ScaiVaultError):
    code = "invalid_path"
    default_message = "The path breaks the path-format rules"


class InvalidSecretType(ScaiVaultError):
    code = "invalid_secret_type"
    default_message = "Unknown secret_type"


class InvalidCursor(ScaiVaultError):
    code = "invalid_cursor"
    default_message = "The pagination cursor is malformed or expired"


class ValidationFailed(ScaiVaultError):
    code = "validation_error"
    default_message = "Field-level validation failed"


class InvalidConfig(ScaiVaultError):
    code = "invalid_config"
    default_message = "The configuration was rejected"


class InvalidRole(ScaiVaultError):
    code = "invalid_role"
    default_message = "The role name is invalid"


class InvalidPolicy(ScaiVaultError):
    code = "invalid_policy"
    default_message = "The policy's rules or bindings are invalid"


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
class SecretNotFound(ScaiVaultError):
    code = "secret_not_found"
    default_message = "No secret at that path"


class VersionNotFound(ScaiVaultError):
    code = "version_not_found"
    default_message = "That version does not exist or is no longer kept"


class TenantNotFound(ScaiVaultError):
    code = "tenant_not_found"
    default_message = "Tenant not found"


class IdentityNotFound(ScaiVaultError):
    code = "identity_not_found"
    default_message = "No such identity in this tenant"


class PolicyNotFound(ScaiVaultError):
    code = "policy_not_found"
    default_message = "No policy with that id"


class BindingNotFound(ScaiVaultError):
    code = "binding_not_found"
    default_message = "No binding with that id on this policy"


class ExportNotFound(ScaiVaultError):
    code = "export_not_found"
    default_message = "No audit export with that id"


class SubscriptionNotFound(ScaiVaultError):
    code = "subscription_not_found"
    default_message = "No subscription with that id"


class SecretPolicyNotFound(ScaiVaultError):
    code = "secret_policy_not_found"
    default_message = "No secret policy with that id"


class WebhookNotFound(ScaiVaultError):
    code = "webhook_not_found"
    default_message = "No webhook with that id"


class DeliveryNotFound(ScaiVaultError):
    code = "delivery_not_found"
    default_message = "No delivery with that id for this webhook"


class RotationPolicyNotFound(ScaiVaultError):
    code = "rotation_policy_not_found"
    default_message = "No rotation policy with that id"


class RotationPolicyExists(ScaiVaultError):
    code = "rotation_policy_exists"
    default_message = "The tenant already has a rotation policy with that name"


# PKI (spec reference/pki, reference/error-codes)
class InvalidCsr(ScaiVaultError):
    code = "invalid_csr"
    default_message = "The certificate signing request could not be read or its signature did not verify"


class InvalidCertificate(ScaiVaultError):
    code = "invalid_certificate"
    default_message = "The certificate could not be read or does not fit where it was given"


class CaNotFound(ScaiVaultError):
    code = "ca_not_found"
    default_message = "No certificate authority with that id"


class CertificateNotFound(ScaiVaultError):
    code = "certificate_not_found"
    default_message = "No certificate with that id"


class CsrNotFound(ScaiVaultError):
    code = "csr_not_found"
    default_message = "No certificate signing request with that id"


class TrustAnchorNotFound(ScaiVaultError):
    code = "trust_anchor_not_found"
    default_message = "No trust anchor with that id"


class CsrNotPending(ScaiVaultError):
    """Approving or rejecting a CSR request that was decided already."""

    code = "csr_not_pending"
    default_message = "The CSR request was approved or rejected already"


class TrustAnchorExists(ScaiVaultError):
    code = "trust_anchor_exists"
    default_message = "The tenant already has a trust anchor with that name or certificate"


class AcmeAccountNotFound(ScaiVaultError):
    code = "acme_account_not_found"
    default_message = "No ACME account with that id"


class AcmeOrderNotFound(ScaiVaultError):
    code = "acme_order_not_found"
    default_message = "No ACME order with that id"


class RoleNotFound(ScaiVaultError):
    code = "role_not_found"
    default_message = "No role with that name"


class EngineNotFound(ScaiVaultError):
    code = "engine_not_found"
    default_message = "No dynamic-secrets engine with that name"


class EngineExists(ScaiVaultError):
    code = "engine_exists"
    default_message = "The tenant already has an engine with that name"


class EngineInUse(ScaiVaultError):
    """An engine (or role) with active leases: revoke them first (``revoke-prefix``), so no credential outlives the
    configuration that could remove it."""

    code = "engine_in_use"
    default_message = "The engine has active leases; revoke them first"


class LeaseNotFound(ScaiVaultError):
    code = "lease_not_found"
    default_message = "No lease with that id"


class LeaseNotRenewable(ScaiVaultError):
    """409: the lease is revoked, expired, or of a credential that carries its own lifetime."""

    code = "lease_not_renewable"
    default_message = "The lease cannot be renewed"


class CaExists(ScaiVaultError):
    code = "ca_exists"
    default_message = "The tenant already has a certificate authority with that name"


class RoleExists(ScaiVaultError):
    code = "role_exists"
    default_message = "The tenant already has a role with that name"


class CaNotActive(ScaiVaultError):
    """The CA cannot sign: revoked, expired, or an intermediate still waiting for its signed certificate."""

    code = "ca_not_active"
    default_message = "The certificate authority cannot sign certificates"


class DnsProviderNotFound(ScaiVaultError):
    code = "dns_provider_not_found"
    default_message = "No DNS provider with that id"


class DnsProviderExists(ScaiVaultError):
    code = "dns_provider_exists"
    default_message = "The tenant already has a DNS provider with that name"


class RouteNotFound(ScaiVaultError):
    code = "not_found"
    default_message = "No such endpoint"


class MethodNotAllowed(ScaiVaultError):
    code = "method_not_allowed"
    default_message = "Method not allowed on this endpoint"


# Conflict (409)
class SecretExists(ScaiVaultError):
    code = "secret_exists"
    default_message = "The path is soft-deleted and still in its retention period; restore it first"


class VersionConflict(ScaiVaultError):
    code = "version_conflict"
    default_message = "The secret was changed concurrently"


class IdentityExists(ScaiVaultError):
    code = "identity_exists"
    default_message = "An identity with that name already exists in this tenant"


class PolicyInUse(ScaiVaultError):
    code = "policy_in_use"
    default_message = "The policy still has bindings; remove them or use force=true"


class BindingExists(ScaiVaultError):
    code = "binding_exists"
    default_message = "The identity is already bound to this policy"


class QuotaExceeded(ScaiVaultError):
    """Creating one more would pass an operator's quota (docs/api-decisions.md): 409, because the answer depends on
    what already exists, not on the request. ``details``: ``resource`` (which quota, e.g.
    ``webhooks_per_tenant``), ``limit`` and ``current`` (how many there are now)."""

    code = "quota_exceeded"
    default_message = "A quota would be exceeded; remove something first"

    def __init__(self, message: str | None = None, *, resource: str, limit: int, current: int) -> None:
        super().__init__(message, resource=resource, limit=limit, current=current)


# ScaiKey webhook deliveries (401): an unsigned, forged or stale delivery is refused before it is read.
class SignatureInvalid(ScaiVaultError):
    code = "signature_invalid"
    default_message = "The webhook signature did not verify"


class SignatureExpired(ScaiVaultError):
    code = "signature_expired"
    default_message = "The webhook timestamp is outside the accepted window"


# Size / availability
class PayloadTooLarge(ScaiVaultError):
    code = "payload_too_large"
    default_message = "The request body is too large"


class RateLimited(ScaiVaultError):
    code = "rate_limited"
    default_message = "Too many requests: wait as long as the Retry-After header says"


class ServiceUnavailable(ScaiVaultError):
    code = "service_unavailable"
    default_message = "The service is temporarily unavailable"


class InternalError(ScaiVaultError):
    code = "internal_error"
    default_message = "An internal error occurred"
