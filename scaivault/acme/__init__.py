"""ScaiVault as an ACME client (RFC 8555): directories, the protocol client, challenge responders, the order driver.

I/O only: nothing here knows the event store. See docs/acme.md.
"""

from scaivault.acme.challenges import (
    Dns01Solver,
    Http01Tokens,
    Solver,
    TlsAlpn01Responder,
    dns01_record,
    dns01_txt_value,
)
from scaivault.acme.client import AcmeClient, generate_account_key
from scaivault.acme.directory import DirectoryChoice, directory_url_for, resolve_directory
from scaivault.acme.driver import STEPS, Issued, Waits, run_order
from scaivault.acme.models import AcmeAccountInfo, AcmeError, ChallengeTask, ExternalAccountBinding, OrderState

__all__ = [
    "STEPS",
    "AcmeAccountInfo",
    "AcmeClient",
    "AcmeError",
    "ChallengeTask",
    "DirectoryChoice",
    "Dns01Solver",
    "ExternalAccountBinding",
    "Http01Tokens",
    "Issued",
    "OrderState",
    "Solver",
    "TlsAlpn01Responder",
    "Waits",
    "directory_url_for",
    "dns01_record",
    "dns01_txt_value",
    "generate_account_key",
    "resolve_directory",
    "run_order",
]
