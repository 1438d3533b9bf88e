"""Cloudflare, through its v4 API (``/client/v4``): an API token as ``Authorization: Bearer``; zones at ``/zones``
(paged), records at ``/zones/{zone_id}/dns_records``, one record per TXT value (so adding and removing one value
touches no other). Answers are the ``{"success", "errors", "result", "result_info"}`` envelope."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scaivault.dns.http import GuardedHttp
from scaivault.dns.port import fqdn_of, unquoted, zone_containing
from scaivault.egress import IPNetwork

API_BASE_URL = "https://api.cloudflare.com/client/v4"
PAGE_SIZE = 50
MAX_PAGES = 200


class CloudflareRecords:
    def __init__(self, *, api_token: str, api_base_url: str | None = None, allow: Sequence[IPNetwork] = ()) -> None:
        self._base = (api_base_url or API_BASE_URL).rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_token}", "Accept": "application/json"}
        self._http = GuardedHttp("Cloudflare", allow, confidential=[api_token])

    async def _call(
        self, method: str, path: str, what: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> dict[str, Any]:
        status, body = await self._http.request(method, self._base + path, headers=self._headers, params=params,
                                                json=json)
        if status // 100 != 2 or not isinstance(body, dict) or body.get("success") is False:
            raise self._http.failure(status, what, _error(body))
        return body

    async def _zones(self, name: str | None = None) -> list[dict[str, Any]]:
        zones: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"page": str(page), "per_page": str(PAGE_SIZE)} | ({"name": name} if name else {})
            body = await self._call("GET", "/zones", "listing zones", params=params)
            zones += [z for z in body.get("result") or [] if isinstance(z, dict) and isinstance(z.get("name"), str)]
            info = body.get("result_info") or {}
            if page >= int(info.get("total_pages") or 1):
                break
        return zones

    async def list_zones(self) -> list[str]:
        return [fqdn_of(z["name"]) for z in await self._zones()]

    async def _zone_id(self, fqdn: str) -> str:
        zones = await self._zones()
        zone = zone_containing([z["name"] for z in zones], fqdn)
        return next(str(z["id"]) for z in zones if fqdn_of(z["name"]) == zone)

    async def _records(self, zone_id: str, fqdn: str) -> list[dict[str, Any]]:
        body = await self._call("GET", f"/zones/{zone_id}/dns_records", "reading TXT records",
                                params={"type": "TXT", "name": fqdn, "per_page": "100"})
        return [r for r in body.get("result") or [] if isinstance(r, dict) and fqdn_of(str(r.get("name"))) == fqdn]

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        name = fqdn_of(fqdn)
        zone_id = await self._zone_id(name)
        if any(unquoted(str(r.get("content", ""))) == value for r in await self._records(zone_id, name)):
            return
        await self._call("POST", f"/zones/{zone_id}/dns_records", "adding the TXT record",
                         json={"type": "TXT", "name": name, "content": value, "ttl": max(ttl, 60)})

    async def remove_txt(self, fqdn: str, value: str) -> None:
        name = fqdn_of(fqdn)
        zone_id = await self._zone_id(name)
        for record in await self._records(zone_id, name):
            if unquoted(str(record.get("content", ""))) == value:
                await self._call("DELETE", f"/zones/{zone_id}/dns_records/{record['id']}", "removing the TXT record")

    async def aclose(self) -> None:
        await self._http.aclose()


def _error(body: object) -> str | None:
    if isinstance(body, dict):
        errors = body.get("errors") or []
        codes = [f"{e.get('code')} {e.get('message', '')}".strip() for e in errors if isinstance(e, dict)]
        return "; ".join(codes) or None
    return None
