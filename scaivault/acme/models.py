"""What the ACME client hands back: plain, serializable records the caller can store as events and resume from.

Nothing here holds key material except ``AcmeAccountInfo.key_pem``, which is kept out of ``repr`` and out of
``to_dict`` (the caller seals it and stores it apart, by reference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# ACME problem types (RFC 8555 section 6.7) after which trying again later can succeed.
_RETRYABLE_PROBLEMS = frozenset({"rateLimited", "serverInternal", "badNonce"})
MAX_DETAIL_LENGTH = 500

# What went wrong, as ``AcmeError.kind``.
KINDS = (
    "server_problem",  # the ACME server refused a request (``problem_type`` says why)
    "challenge_failed",  # the CA could not validate an identifier
    "order_invalid",  # the order ended invalid for another reason (expired, finalization refused)
    "rate_limited",  # the CA's rate limits; try again after a while
    "external_account_required",  # the CA registers accounts only with an external account binding
    "unsupported_challenge",  # no configured solver can answer what the CA offers for an identifier
    "solver_failed",  # a solver could not present a challenge (the DNS provider refused, ...)
    "timeout",  # a bounded wait ran out; the order may still complete: resume it later
    "unreachable",  # no answer from the ACME server (network, TLS)
    "egress_refused",  # the egress guard refused the server's address
    "bad_response",  # the server's answer was not what RFC 8555 describes
)


def clip(text: object, limit: int = MAX_DETAIL_LENGTH) -> str:
    return " ".join(str(text).split())[:limit]


class AcmeError(Exception):
    """A failure with a ``kind`` (see ``KINDS``), a ``detail`` fit to show the client (the CA's own words where it
    gave them; never a stack trace, a key or an internal address), the ACME ``problem_type`` URN when the CA sent a
    problem document, and the ``identifier`` it concerns."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        problem_type: str | None = None,
        identifier: str | None = None,
    ) -> None:
        self.kind = kind
        self.detail = clip(detail)
        self.problem_type = problem_type
        self.identifier = identifier
        super().__init__(f"{kind}: {self.detail}")

    @property
    def retryable(self) -> bool:
        """Whether the same step may succeed later (the order is not known to be dead)."""
        if self.kind in ("timeout", "unreachable", "rate_limited"):
            return True
        return self.kind == "server_problem" and (self.problem_type or "").rsplit(":", 1)[-1] in _RETRYABLE_PROBLEMS

    def to_dict(self) -> dict[str, str]:
        result = {"kind": self.kind, "detail": self.detail}
        if self.problem_type:
            result["problem_type"] = self.problem_type
        if self.identifier:
            result["identifier"] = self.identifier
        return result


@dataclass(frozen=True)
class ExternalAccountBinding:
    """The key id and base64url HMAC key a CA's console gives for binding a new ACME account (RFC 8555 7.3.4)."""

    kid: str
    hmac_key: str = field(repr=False)
    alg: str = "HS256"


@dataclass(frozen=True)
class AcmeAccountInfo:
    """A registered account: where it lives, and the key that signs for it (PEM, PKCS#8)."""

    directory_url: str
    uri: str
    key_pem: str = field(repr=False)
    status: str = "valid"
    terms_of_service: str | None = None
    # The CAs trusted for the ACME server's TLS certificate (PEM); None: the public trust store.
    ca_bundle: str | None = field(default=None, repr=False)
    contact: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Everything but the key."""
        return {
            "directory_url": self.directory_url,
            "uri": self.uri,
            "status": self.status,
            "terms_of_service": self.terms_of_service,
            "ca_bundle": self.ca_bundle,
            "contact": list(self.contact),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key_pem: str) -> AcmeAccountInfo:
        return cls(
            directory_url=str(data["directory_url"]),
            uri=str(data["uri"]),
            key_pem=key_pem,
            status=str(data.get("status") or "valid"),
            terms_of_service=data.get("terms_of_service"),
            ca_bundle=data.get("ca_bundle"),
            contact=tuple(data.get("contact") or ()),
        )


@dataclass(frozen=True)
class OrderState:
    """An order as the CA last described it. ``status``: pending, ready, processing, valid or invalid (RFC 8555
    7.1.6). Every field is a string (or a tuple of strings), so ``to_dict`` is JSON and ``from_dict`` restores it:
    store one after each step and resume from it."""

    url: str
    status: str
    identifiers: tuple[str, ...]
    authorizations: tuple[str, ...] = ()
    finalize: str = ""
    certificate: str | None = None
    expires: str | None = None
    error_type: str | None = None
    error_detail: str | None = None
    error_identifier: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "status": self.status,
            "identifiers": list(self.identifiers),
            "authorizations": list(self.authorizations),
            "finalize": self.finalize,
            "certificate": self.certificate,
            "expires": self.expires,
            "error_type": self.error_type,
            "error_detail": self.error_detail,
            "error_identifier": self.error_identifier,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OrderState:
        return cls(
            url=str(data["url"]),
            status=str(data["status"]),
            identifiers=tuple(data.get("identifiers") or ()),
            authorizations=tuple(data.get("authorizations") or ()),
            finalize=str(data.get("finalize") or ""),
            certificate=data.get("certificate"),
            expires=data.get("expires"),
            error_type=data.get("error_type"),
            error_detail=data.get("error_detail"),
            error_identifier=data.get("error_identifier"),
        )

    def with_error(self, error: AcmeError) -> OrderState:
        return replace(
            self,
            error_type=error.problem_type or error.kind,
            error_detail=error.detail,
            error_identifier=error.identifier,
        )

    def error(self) -> AcmeError | None:
        """The failure the CA recorded on an invalid order, as an ``AcmeError``."""
        if self.status != "invalid":
            return None
        problem = self.error_type if self.error_type and ":" in self.error_type else None
        code = (problem or "").rsplit(":", 1)[-1]
        if code == "rateLimited":
            kind = "rate_limited"
        elif self.error_identifier is not None:
            kind = "challenge_failed"
        else:
            kind = "order_invalid"
        return AcmeError(
            kind,
            self.error_detail or "the ACME server marked the order invalid",
            problem_type=problem,
            identifier=self.error_identifier,
        )


@dataclass(frozen=True)
class ChallengeTask:
    """One challenge to answer for one authorization. ``identifier`` is the name as ordered (``*.example.com`` for a
    wildcard); ``validation`` is what the challenge publishes: the key authorization (http-01), the TXT value
    (dns-01), or the base64url SHA-256 digest of the key authorization (tls-alpn-01)."""

    identifier: str
    type: str
    token: str
    key_authorization: str
    validation: str
    url: str
    authorization_url: str
    status: str = "pending"

    def to_dict(self) -> dict[str, str]:
        return {
            "identifier": self.identifier,
            "type": self.type,
            "token": self.token,
            "key_authorization": self.key_authorization,
            "validation": self.validation,
            "url": self.url,
            "authorization_url": self.authorization_url,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChallengeTask:
        return cls(**{name: str(data[name]) for name in cls.__dataclass_fields__})
