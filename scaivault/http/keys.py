"""Typed keys for what each request carries."""

from __future__ import annotations

from aiohttp import web

from scaivault.audit.access_records import AccessRecord
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
# The client's address as policies and access records see it (scaivault/http/client_ip.py); None when unknown.
CLIENT_IP: web.RequestKey[str | None] = web.RequestKey("client_ip")
ACCESS: web.RequestKey[AccessRecord] = web.RequestKey("access_record", AccessRecord)
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller", Caller)
