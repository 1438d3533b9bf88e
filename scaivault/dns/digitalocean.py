"""DigitalOcean, through its v2 API: a personal access token as ``Authorization: Bearer``; domains at
``/v2/domains`` (paged by ``links.pages.next``), records at ``/v2/domains/{domain}/records``, one record per TXT value,
named relative to the domain (``@`` for the apex)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scaivault.dns.http import GuardedHttp
from scaivault.dns.port import fqdn_of, zone_containing
from scaivault.egress import IPNetwork

API_BASE_URL = "https://api.digitalocean.com"
PAGE_SIZE = 200
MAX_PAGES = 100
MIN_TTL = 30  # DigitalOcean refuses less


class DigitalOceanRecords:
    def __init__(self, *, api_token: str, api_base_url: str | None = None, allow: Sequence[IPNetwork] = ()) -> None:
        self._base = (api_base_url or API_BASE_URL).rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_token}", "Accept": "application/json"}
        self._http = GuardedHttp("DigitalOcean", allow, confidential=[api_token])

    async def _call(
        self, method: str, path: str, what: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> Any:
        status, body = await self._http.request(method, self._base + path, headers=self._headers, params=params,
                                                json=json)
        if status // 100 != 2:
            detail = body.get("message") or body.get("id") if isinstance(body, dict) else None
            raise self._http.failure(status, what, detail)
        return body

    async def list_zones(self) -> list[str]:
        names: list[str] = []
        for page in range(1, MAX_PAGES + 1):
            body = await self._call("GET", "/v2/domains", "listing domains",
                                    params={"page": str(page), "per_page": str(PAGE_SIZE)})
            domains = body.get("domains") or [] if isinstance(body, dict) else []
            names += [fqdn_of(d["name"]) for d in domains if isinstance(d, dict) and isinstance(d.get("name"), str)]
            if not ((body.get("links") or {}).get("pages") or {}).get("next"):
                break
        return names

    async def _records(self, zone: str, fqdn: str) -> list[dict[str, Any]]:
        body = await self._call("GET", f"/v2/domains/{zone}/records", "reading TXT records",
                                params={"type": "TXT", "name": fqdn, "per_page": str(PAGE_SIZE)})
        records = body.get("domain_records") or [] if isinstance(body, dict) else []
        relative = _relative(fqdn, zone)
        return [r for r in records if isinstance(r, dict) and r.get("type") == "TXT" and r.get("name") == relative]

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        name = fqdn_of(fqdn)
        zone = zone_containing(await self.list_zones(), name)
        if any(r.get("data") == value for r in await self._records(zone, name)):
            return
        await self._call("POST", f"/v2/domains/{zone}/records", "adding the TXT record",
                         json={"type": "TXT", "name": _relative(name, zone), "data": value, "ttl": max(ttl, MIN_TTL)})

    async def remove_txt(self, fqdn: str, value: str) -> None:
        name = fqdn_of(fqdn)
        zone = zone_containing(await self.list_zones(), name)
        for record in await self._records(zone, name):
            if record.get("data") == value:
                await self._call("DELETE", f"/v2/domains/{zone}/records/{record['id']}", "removing the TXT record")

    async def aclose(self) -> None:
        await self._http.aclose()


def _relative(fqdn: str, zone: str) -> str:
    return "@" if fqdn == zone else fqdn[: -len(zone) - 1]
