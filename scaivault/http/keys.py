"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from scaivault.audit.access_records import AccessRecord

if TYPE_CHECKING:
    from scaivault.bootstrap import Container
    from scaivault.http.context import Caller

CONTAINER: web.AppKey[Container] = web.AppKey("container")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
ACCESS: web.RequestKey[AccessRecord] = web.RequestKey("access_record", AccessRecord)
CALLER: web.RequestKey[Caller] = web.RequestKey("caller")
