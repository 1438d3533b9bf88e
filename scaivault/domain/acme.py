"""ACME accounts and orders (spec api-guides/acme, tutorials/acme-wildcard-cert; decisions: docs/acme.md).

``AcmeAccount``: an account registered with a CA; its key is sealed by the command (``ACME_ACCOUNT_KEY``) and the
events carry only the ciphertext and its data key's id. ``AcmeOrder``: one order, every step the worker takes
recorded as an event, with the CA's order state (``OrderState.to_dict()``, URLs and statuses: no key material) on
each, so a restarted worker resumes from the last one. The certificate key an order generated is sealed the same way
(``ISSUED_KEY``, bound to the order id). Key authorizations are public by design (the CA fetches them over plain
HTTP) and are recorded only for http-01, whose token table any server process answers from.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import InvalidRequest

_ACCOUNT_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/acme-account")
_ORDER_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/acme-order")

PENDING = "pending"
PROCESSING = "processing"
VALID = "valid"
INVALID = "invalid"
CANCELLED = "cancelled"
TERMINAL = (VALID, INVALID, CANCELLED)
CHALLENGE_TYPES = ("dns-01", "http-01", "tls-alpn-01")
# Which spec status each step leaves the order in (docs/acme.md, "The driver").
STEP_STATUS = {
    "order_created": PENDING,
    "challenges_presented": PENDING,
    "challenges_answered": PROCESSING,
    "finalized": PROCESSING,
}


def account_stream_id(account_id: str) -> UUID:
    return uuid5(_ACCOUNT_NAMESPACE, account_id)


def order_stream_id(order_id: str) -> UUID:
    return uuid5(_ORDER_NAMESPACE, order_id)


class OrderCancelled(Exception):
    """The order was cancelled (or otherwise ended) while a worker was driving it: the worker stops."""


class AcmeAccount(Aggregate):
    @staticmethod
    def create_id(account_id: str) -> UUID:
        return account_stream_id(account_id)

    class Registered(Aggregate.Created):
        account_id: str
        owner: str
        partner_id: str
        name: str
        provider: str
        environment: str
        directory_url: str
        email: str | None
        account_uri: str
        ca_bundle: str | None
        key_ciphertext: bytes
        key_data_key_id: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Registered)
    def __init__(
        self, account_id: str, owner: str, partner_id: str, name: str, provider: str, environment: str,
        directory_url: str, email: str | None, account_uri: str, ca_bundle: str | None, key_ciphertext: bytes,
        key_data_key_id: str, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.account_id = account_id
        self.owner = owner
        self.partner_id = partner_id
        self.name = name
        self.provider = provider
        self.environment = environment
        self.directory_url = directory_url
        self.email = email
        self.account_uri = account_uri
        self.ca_bundle = ca_bundle
        self.key_ciphertext = key_ciphertext
        self.key_data_key_id = key_data_key_id
        self.status = "valid"

    def deactivate(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        self._deactivated(at=at, actor=actor, request_id=request_id)

    class Deactivated(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deactivated)
    def _deactivated(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.status = "deactivated"


class AcmeOrder(Aggregate):
    @staticmethod
    def create_id(order_id: str) -> UUID:
        return order_stream_id(order_id)

    class Requested(Aggregate.Created):
        """``names``: the common name first, then the other names. ``key_ciphertext``: the certificate key the
        server made (None when the caller sent ``csr_pem``). ``renewal_of``: the certificate this order renews, and
        ``renewal_of_order`` the order that issued it."""

        order_id: str
        owner: str
        partner_id: str
        account_id: str
        names: list[str]
        challenge_type: str
        dns_provider_id: str | None
        key_type: str
        key_bits: int
        key_ciphertext: bytes | None
        key_data_key_id: str | None
        csr_pem: str | None
        secret_path: str
        auto_renew: bool
        renew_before_seconds: int
        renewal_of: str | None
        renewal_of_order: str | None
        at: datetime
        actor: str
        request_id: str | None

    @event(Requested)
    def __init__(
        self, order_id: str, owner: str, partner_id: str, account_id: str, names: list[str], challenge_type: str,
        dns_provider_id: str | None, key_type: str, key_bits: int, key_ciphertext: bytes | None,
        key_data_key_id: str | None, csr_pem: str | None, secret_path: str, auto_renew: bool,
        renew_before_seconds: int, renewal_of: str | None, renewal_of_order: str | None, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        self.order_id = order_id
        self.owner = owner
        self.partner_id = partner_id
        self.account_id = account_id
        self.names = names
        self.challenge_type = challenge_type
        self.dns_provider_id = dns_provider_id
        self.key_type = key_type
        self.key_bits = key_bits
        self.key_ciphertext = key_ciphertext
        self.key_data_key_id = key_data_key_id
        self.csr_pem = csr_pem
        self.secret_path = secret_path
        self.auto_renew = auto_renew
        self.renew_before_seconds = renew_before_seconds
        self.renewal_of = renewal_of
        self.renewal_of_order = renewal_of_order
        self.status = PENDING
        self.step = "requested"
        self.state: dict[str, Any] | None = None
        self.attempts = 0
        self.certificate_id: str | None = None
        self.renewal_order_id: str | None = None
        self.renewal_failures = 0

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def _require_open(self) -> None:
        if self.terminal:
            raise OrderCancelled(self.order_id)

    # -- the worker's steps ----------------------------------------------------------------------------------------

    def record_step(self, step: str, state: dict[str, Any], *, at: datetime) -> bool:
        """A step the driver reported; False (no event) for a repeat of the step last recorded with the same
        state, which a resumed run reports again."""
        self._require_open()
        if step == self.step and state == self.state:
            return False
        self._stepped(step=step, status=STEP_STATUS[step], state=state, at=at)
        return True

    class Stepped(Aggregate.Event):
        """``order_created`` (the CA's order URL is in ``state``), ``challenges_presented``,
        ``challenges_answered``, ``finalized``."""

        step: str
        status: str
        state: dict[str, Any]
        at: datetime

    @event(Stepped)
    def _stepped(self, step: str, status: str, state: dict[str, Any], at: datetime) -> None:
        self.step = step
        self.status = status
        self.state = state

    def present_challenge(self, challenge: dict[str, str], *, at: datetime) -> None:
        self._require_open()
        self._challenge_presented(challenge=challenge, at=at)

    class ChallengePresented(Aggregate.Event):
        """``challenge``: type, identifier, token, url, record_name (dns-01), key_authorization (http-01 only)."""

        challenge: dict[str, str]
        at: datetime

    @event(ChallengePresented)
    def _challenge_presented(self, challenge: dict[str, str], at: datetime) -> None:
        pass

    def clean_up_challenge(self, challenge: dict[str, str], *, at: datetime) -> None:
        # Never refused: a cancelled order's challenges are still taken down.
        self._challenge_cleaned_up(challenge=challenge, at=at)

    class ChallengeCleanedUp(Aggregate.Event):
        challenge: dict[str, str]
        at: datetime

    @event(ChallengeCleanedUp)
    def _challenge_cleaned_up(self, challenge: dict[str, str], at: datetime) -> None:
        pass

    def schedule_retry(self, *, error: dict[str, str], retry_at: datetime, at: datetime) -> None:
        """A failure that may pass (the CA unreachable, rate limited, a wait ran out): try again at ``retry_at``."""
        self._require_open()
        self._retry_scheduled(error=error, attempts=self.attempts + 1, retry_at=retry_at, at=at)

    class RetryScheduled(Aggregate.Event):
        error: dict[str, str]
        attempts: int
        retry_at: datetime
        at: datetime

    @event(RetryScheduled)
    def _retry_scheduled(self, error: dict[str, str], attempts: int, retry_at: datetime, at: datetime) -> None:
        self.attempts = attempts

    def complete(self, *, certificate_id: str, state: dict[str, Any], renew_at: datetime | None,
                 at: datetime) -> None:
        self._require_open()
        self._completed(certificate_id=certificate_id, state=state, renew_at=renew_at, at=at)

    class Completed(Aggregate.Event):
        certificate_id: str
        state: dict[str, Any]
        renew_at: datetime | None
        at: datetime

    @event(Completed)
    def _completed(self, certificate_id: str, state: dict[str, Any], renew_at: datetime | None, at: datetime) -> None:
        self.status = VALID
        self.step = "completed"
        self.state = state
        self.certificate_id = certificate_id

    def fail(self, *, error: dict[str, str], state: dict[str, Any] | None, at: datetime) -> bool:
        if self.terminal:
            return False
        self._failed(error=error, state=state, at=at)
        return True

    class Failed(Aggregate.Event):
        """``error``: ``type`` (the CA's problem URN, or our kind) and ``detail`` (the CA's own words or ours)."""

        error: dict[str, str]
        state: dict[str, Any] | None
        at: datetime

    @event(Failed)
    def _failed(self, error: dict[str, str], state: dict[str, Any] | None, at: datetime) -> None:
        self.status = INVALID
        self.step = "failed"
        if state is not None:
            self.state = state

    def cancel(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        if self.terminal:
            raise InvalidRequest(f"The order is {self.status} already", status=self.status)
        self._cancelled(at=at, actor=actor, request_id=request_id)

    class Cancelled(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Cancelled)
    def _cancelled(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.status = CANCELLED
        self.step = "cancelled"

    # -- renewal (on the order that issued the certificate) --------------------------------------------------------

    def renewal_due(self) -> bool:
        return self.status == VALID and self.auto_renew and self.renewal_order_id is None

    def start_renewal(self, *, renewal_order_id: str, at: datetime) -> None:
        self._renewal_started(renewal_order_id=renewal_order_id, at=at)

    class RenewalStarted(Aggregate.Event):
        renewal_order_id: str
        at: datetime

    @event(RenewalStarted)
    def _renewal_started(self, renewal_order_id: str, at: datetime) -> None:
        self.renewal_order_id = renewal_order_id

    def renewal_failed(self, *, renewal_order_id: str, error: dict[str, str], retry_at: datetime,
                       at: datetime) -> None:
        """The renewal order ended invalid: renew again at ``retry_at`` (backing off)."""
        self._renewal_failed(renewal_order_id=renewal_order_id, error=error, failures=self.renewal_failures + 1,
                             retry_at=retry_at, at=at)

    class RenewalFailed(Aggregate.Event):
        renewal_order_id: str
        error: dict[str, str]
        failures: int
        retry_at: datetime
        at: datetime

    @event(RenewalFailed)
    def _renewal_failed(self, renewal_order_id: str, error: dict[str, str], failures: int, retry_at: datetime,
                        at: datetime) -> None:
        self.renewal_order_id = None
        self.renewal_failures = failures
