"""ScaiDNS, the ScaiLabs DNS service. Its API is not described by the pages we have; this client ASSUMES a REST API
(docs/dns-providers.md): ``Authorization: Bearer sdk_...``; ``GET {base_url}/v1/domains`` ->
``{"domains": [{"name": ...}]}``; ``GET {base_url}/v1/domains/{zone}/records?type=TXT&name=<fqdn>`` ->
``{"records": [{"id", "type", "name", "content", "ttl"}]}``; ``POST`` there with ``{"type", "name", "content", "ttl"}``;
``DELETE {base_url}/v1/domains/{zone}/records/{id}``. One record per TXT value. The key needs the ScaiDNS scopes
``domains:read``, ``records:read`` and ``records:write``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from scaivault.dns.http import GuardedHttp
from scaivault.dns.port import fqdn_of, zone_containing
from scaivault.egress import IPNetwork


class ScaiDnsRecords:
    def __init__(self, *, base_url: str, api_key: str, allow: Sequence[IPNetwork] = ()) -> None:
        self._base = base_url.rstrip("/") + "/v1"
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
        self._http = GuardedHttp("ScaiDNS", allow, confidential=[api_key])

    async def _call(
        self, method: str, path: str, what: str, *, params: dict[str, str] | None = None, json: Any = None
    ) -> Any:
        status, body = await self._http.request(method, self._base + path, headers=self._headers, params=params,
                                                json=json)
        if status // 100 != 2:
            detail = (body.get("error") or body.get("message")) if isinstance(body, dict) else None
            raise self._http.failure(status, what, detail if isinstance(detail, str) else None)
        return body

    async def list_zones(self) -> list[str]:
        body = await self._call("GET", "/domains", "listing domains")
        domains = body.get("domains") if isinstance(body, dict) else body
        return [fqdn_of(d["name"]) for d in domains or [] if isinstance(d, dict) and isinstance(d.get("name"), str)]

    async def _records(self, zone: str, fqdn: str) -> list[dict[str, Any]]:
        body = await self._call("GET", f"/domains/{quote(zone, safe='')}/records", "reading TXT records",
                                params={"type": "TXT", "name": fqdn})
        records = body.get("records") if isinstance(body, dict) else body
        return [r for r in records or [] if isinstance(r, dict) and r.get("type") == "TXT"
                and fqdn_of(str(r.get("name", ""))) == fqdn]

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        name = fqdn_of(fqdn)
        zone = zone_containing(await self.list_zones(), name)
        if any(r.get("content") == value for r in await self._records(zone, name)):
            return
        await self._call("POST", f"/domains/{quote(zone, safe='')}/records", "adding the TXT record",
                         json={"type": "TXT", "name": name, "content": value, "ttl": ttl})

    async def remove_txt(self, fqdn: str, value: str) -> None:
        name = fqdn_of(fqdn)
        zone = zone_containing(await self.list_zones(), name)
        for record in await self._records(zone, name):
            if record.get("content") == value:
                record_id = quote(str(record["id"]), safe="")
                await self._call("DELETE", f"/domains/{quote(zone, safe='')}/records/{record_id}",
                                 "removing the TXT record")

    async def aclose(self) -> None:
        await self._http.aclose()
