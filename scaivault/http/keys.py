"""Typed keys for what the app and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from scaivault.bootstrap import Container

CONTAINER: web.AppKey[Container] = web.AppKey("container")

# Request-scoped values (aiohttp requests are str-keyed mappings).
REQUEST_ID = "scaivault.request_id"
ACCESS = "scaivault.access_record"
CALLER = "scaivault.caller"
