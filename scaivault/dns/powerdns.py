"""PowerDNS Authoritative, through its HTTP API (``api=yes``): ``X-API-Key``; zones at
``/api/v1/servers/{server_id}/zones``; a TXT record set replaced whole by ``PATCH .../zones/{zone}`` with an rrset of
``changetype`` REPLACE (or DELETE when its last value goes). Values are in presentation form (quoted)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from scaivault.dns.http import GuardedHttp
from scaivault.dns.port import DnsProviderError, fqdn_of, quoted, unquoted, zone_containing
from scaivault.egress import IPNetwork


class PowerDnsRecords:
    def __init__(
        self, *, api_url: str, api_key: str, server_id: str = "localhost", allow: Sequence[IPNetwork] = ()
    ) -> None:
        self._base = f"{api_url.rstrip('/')}/api/v1/servers/{quote(server_id, safe='')}"
        self._headers = {"X-API-Key": api_key, "Accept": "application/json"}
        self._http = GuardedHttp("PowerDNS", allow, confidential=[api_key])
        # A record set is read, changed and written back whole: two changes of one name in this client take turns.
        self._lock = asyncio.Lock()

    async def _zones(self) -> list[dict[str, Any]]:
        status, body = await self._http.request("GET", f"{self._base}/zones", headers=self._headers)
        if status != 200 or not isinstance(body, list):
            raise self._http.failure(status, "listing zones", _error(body))
        return [z for z in body if isinstance(z, dict) and isinstance(z.get("name"), str)]

    async def list_zones(self) -> list[str]:
        return [fqdn_of(z["name"]) for z in await self._zones()]

    async def _zone_id(self, fqdn: str) -> str:
        zones = await self._zones()
        zone = zone_containing([z["name"] for z in zones], fqdn)
        for z in zones:
            if fqdn_of(z["name"]) == zone:
                return str(z.get("id") or z["name"])
        raise DnsProviderError("the zone disappeared while it was being looked up")

    async def _values(self, zone_id: str, fqdn: str) -> tuple[list[str], int | None]:
        status, body = await self._http.request(
            "GET", f"{self._base}/zones/{quote(zone_id, safe='')}", headers=self._headers,
            params={"rrset_name": fqdn + ".", "rrset_type": "TXT"},
        )
        if status != 200 or not isinstance(body, dict):
            raise self._http.failure(status, "reading the zone", _error(body))
        for rrset in body.get("rrsets") or []:
            if fqdn_of(str(rrset.get("name", ""))) == fqdn and rrset.get("type") == "TXT":
                values = [unquoted(str(r.get("content", ""))) for r in rrset.get("records") or []]
                return values, rrset.get("ttl")
        return [], None

    async def _write(self, zone_id: str, fqdn: str, values: list[str], ttl: int) -> None:
        rrset: dict[str, Any] = {"name": fqdn + ".", "type": "TXT"}
        if values:
            rrset |= {"changetype": "REPLACE", "ttl": ttl,
                      "records": [{"content": quoted(v), "disabled": False} for v in values]}
        else:
            rrset["changetype"] = "DELETE"
        status, body = await self._http.request(
            "PATCH", f"{self._base}/zones/{quote(zone_id, safe='')}", headers=self._headers, json={"rrsets": [rrset]}
        )
        if status not in (200, 204):
            raise self._http.failure(status, "changing the TXT record", _error(body))

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        name = fqdn_of(fqdn)
        async with self._lock:
            zone_id = await self._zone_id(name)
            values, _ = await self._values(zone_id, name)
            if value not in values:
                await self._write(zone_id, name, [*values, value], ttl)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        name = fqdn_of(fqdn)
        async with self._lock:
            zone_id = await self._zone_id(name)
            values, current_ttl = await self._values(zone_id, name)
            if value in values:
                await self._write(zone_id, name, [v for v in values if v != value], current_ttl or 60)

    async def aclose(self) -> None:
        await self._http.aclose()


def _error(body: object) -> str | None:
    return str(body.get("error")) if isinstance(body, dict) and body.get("error") else None
