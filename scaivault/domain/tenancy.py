"""Partners and tenants (spec core-concepts/multi-tenancy): partner -> tenants -> identities."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import InvalidRequest

_PARTNER_ID = re.compile(r"ptn_[a-z0-9_]{1,60}")
_TENANT_ID = re.compile(r"tnt_[a-z0-9_]{1,60}")
_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/tenancy")


def parse_partner_id(raw: object) -> str:
    if not isinstance(raw, str) or not _PARTNER_ID.fullmatch(raw):
        raise InvalidRequest("A partner id is 'ptn_' followed by 1-60 of a-z, 0-9, '_'", partner_id=str(raw)[:80])
    return raw


def parse_tenant_id(raw: object) -> str:
    if not isinstance(raw, str) or not _TENANT_ID.fullmatch(raw):
        raise InvalidRequest("A tenant id is 'tnt_' followed by 1-60 of a-z, 0-9, '_'", tenant_id=str(raw)[:80])
    return raw


# Event classes are declared, not made by ``@event("Name")``, so that a type checker sees them; each keeps the name,
# and so the stored topic (``scaivault.domain.tenancy:<Aggregate>.<Name>``), and the fields it was stored with.


class Partner(Aggregate):
    @staticmethod
    def create_id(partner_id: str) -> UUID:
        return uuid5(_NAMESPACE, partner_id)

    class Registered(Aggregate.Created):
        partner_id: str
        name: str
        at: datetime
        actor: str

    @event(Registered)
    def __init__(self, partner_id: str, name: str, at: datetime, actor: str) -> None:
        self.partner_id = partner_id
        self.name = name


class Tenant(Aggregate):
    @staticmethod
    def create_id(tenant_id: str) -> UUID:
        return uuid5(_NAMESPACE, tenant_id)

    class Registered(Aggregate.Created):
        tenant_id: str
        partner_id: str
        name: str
        at: datetime
        actor: str

    @event(Registered)
    def __init__(self, tenant_id: str, partner_id: str, name: str, at: datetime, actor: str) -> None:
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
