"""Which ACME directory a provider and environment name (spec api-guides/acme: ``provider``, ``environment``).

ZeroSSL runs no staging server, so ``zerossl``/``staging`` is refused rather than quietly pointed at production
(staging exists to keep mistakes away from real quota). ZeroSSL and Google Trust Services register accounts only with
an external account binding (a key id and an HMAC key from the provider's console).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from scaivault.domain.errors import ValidationFailed

PROVIDERS = ("letsencrypt", "zerossl", "buypass", "google", "custom")
ENVIRONMENTS = ("production", "staging")

_DIRECTORIES: dict[tuple[str, str], str] = {
    ("letsencrypt", "production"): "https://acme-v02.api.letsencrypt.org/directory",
    ("letsencrypt", "staging"): "https://acme-staging-v02.api.letsencrypt.org/directory",
    ("zerossl", "production"): "https://acme.zerossl.com/v2/DV90",
    ("buypass", "production"): "https://api.buypass.com/acme/directory",
    ("buypass", "staging"): "https://api.test4.buypass.no/acme/directory",
    ("google", "production"): "https://dv.acme-v02.api.pki.goog/directory",
    ("google", "staging"): "https://dv.acme-v02.test-api.pki.goog/directory",
}
_NEEDS_EAB = frozenset({"zerossl", "google"})
MAX_URL_LENGTH = 2048


@dataclass(frozen=True)
class DirectoryChoice:
    provider: str
    environment: str
    directory_url: str
    requires_external_account: bool


def resolve_directory(
    provider: object, environment: object = "production", directory_url: object = None
) -> DirectoryChoice:
    """The directory of ``provider`` in ``environment``; ``custom`` takes ``directory_url`` (https), the others
    refuse one. Raises ``ValidationFailed`` naming every field that is wrong."""
    fields: list[dict[str, str]] = []
    if not isinstance(provider, str) or provider not in PROVIDERS:
        fields.append({"field": "provider", "message": f"must be one of {', '.join(PROVIDERS)}"})
    if not isinstance(environment, str) or environment not in ENVIRONMENTS:
        fields.append({"field": "environment", "message": f"must be one of {', '.join(ENVIRONMENTS)}"})
    if fields:
        raise ValidationFailed(fields=fields)
    assert isinstance(provider, str) and isinstance(environment, str)
    if provider == "custom":
        url = _custom_url(directory_url)
        return DirectoryChoice(provider, environment, url, requires_external_account=False)
    if directory_url is not None:
        raise ValidationFailed(
            fields=[{"field": "directory_url", "message": "only the custom provider takes a directory_url"}]
        )
    known = _DIRECTORIES.get((provider, environment))
    if known is None:
        raise ValidationFailed(
            fields=[{"field": "environment", "message": f"{provider} has no {environment} environment"}]
        )
    return DirectoryChoice(provider, environment, known, requires_external_account=provider in _NEEDS_EAB)


def directory_url_for(provider: object, environment: object = "production", directory_url: object = None) -> str:
    return resolve_directory(provider, environment, directory_url).directory_url


def _custom_url(value: object) -> str:
    def refuse(message: str) -> ValidationFailed:
        return ValidationFailed(fields=[{"field": "directory_url", "message": message}])

    if value is None or value == "":
        raise refuse("is required for the custom provider")
    if not isinstance(value, str) or len(value) > MAX_URL_LENGTH:
        raise refuse(f"must be an https URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise refuse("is not a valid URL") from None
    # RFC 8555 section 6.1: ACME is spoken over HTTPS only.
    if parts.scheme != "https" or not parts.hostname:
        raise refuse("must be an https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise refuse("may not contain credentials")
    if parts.fragment:
        raise refuse("may not contain a fragment")
    return value
