"""Authentication: ScaiKey JWTs (JWKS), the built-in issuer's JWTs, and personal access tokens (``skt_...``)."""

from scaivault.auth.authenticator import TokenAuthenticator
from scaivault.auth.issuer import BuiltinIssuer
from scaivault.auth.jwks import JwksClient
from scaivault.auth.pats import find_pat, issue_pat, revoke_pat
from scaivault.auth.principal import Principal, identity_type_of
from scaivault.auth.revocation import RevocationCache, revoke

__all__ = [
    "BuiltinIssuer",
    "JwksClient",
    "Principal",
    "RevocationCache",
    "TokenAuthenticator",
    "find_pat",
    "identity_type_of",
    "issue_pat",
    "revoke",
    "revoke_pat",
]
