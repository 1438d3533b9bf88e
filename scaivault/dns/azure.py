"""Azure DNS, through Azure Resource Manager's REST API (``api-version=2018-05-01``) with a service principal: an
access token from Microsoft Entra ID's client-credentials flow (``POST {login}/{tenant_id}/oauth2/v2.0/token``, scope
``https://management.azure.com/.default``), then zones at ``.../resourceGroups/{rg}/providers/Microsoft.Network/
dnsZones`` and a TXT record set at ``.../dnsZones/{zone}/TXT/{relative name}`` (``@`` for the apex), written whole
with ``If-Match`` on the ETag read (or ``If-None-Match: *`` when new), so a concurrent change is not overwritten: it
makes the write fail with 412 and the change is tried again on fresh state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from scaivault.dns.http import GuardedHttp
from scaivault.dns.port import DnsProviderError, WholeRecordSetRecords, fqdn_of, zone_containing
from scaivault.egress import IPNetwork

API_BASE_URL = "https://management.azure.com"
LOGIN_BASE_URL = "https://login.microsoftonline.com"
API_VERSION = "2018-05-01"
SCOPE = "https://management.azure.com/.default"
MAX_PAGES = 100
ATTEMPTS = 3


class AzureRecords(WholeRecordSetRecords):
    def __init__(
        self, *, subscription_id: str, resource_group: str, tenant_id: str, client_id: str, client_secret: str,
        api_base_url: str | None = None, login_base_url: str | None = None, allow: Sequence[IPNetwork] = (),
    ) -> None:
        self._api = (api_base_url or API_BASE_URL).rstrip("/")
        self._login = (login_base_url or LOGIN_BASE_URL).rstrip("/")
        self._zones_url = (
            f"{self._api}/subscriptions/{quote(subscription_id, safe='')}/resourceGroups/"
            f"{quote(resource_group, safe='')}/providers/Microsoft.Network/dnsZones"
        )
        self._tenant_id = tenant_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = GuardedHttp("Azure DNS", allow, confidential=[client_secret])
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def _bearer(self) -> dict[str, str]:
        if self._token is None or self._token[1] <= time.monotonic():
            status, body = await self._http.request(
                "POST", f"{self._login}/{quote(self._tenant_id, safe='')}/oauth2/v2.0/token",
                data={"grant_type": "client_credentials", "client_id": self._client_id,
                      "client_secret": self._client_secret, "scope": SCOPE},
            )
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
                detail = body.get("error") if isinstance(body, dict) else None
                raise self._http.failure(status, "getting an access token", detail)
            lifetime = float(body.get("expires_in") or 300)
            self._token = (body["access_token"], time.monotonic() + max(lifetime - 60, 30))
        return {"Authorization": f"Bearer {self._token[0]}", "Accept": "application/json"}

    async def _call(
        self, method: str, url: str, what: str, *, json: Any = None, headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        status, body = await self._http.request(
            method, url, headers={**await self._bearer(), **(headers or {})}, json=json,
            params=None if "api-version=" in url else {"api-version": API_VERSION},
        )
        if status not in ok:
            detail = ((body.get("error") or {}).get("code") if isinstance(body, dict) else None)
            raise self._http.failure(status, what, detail)
        return status, body

    async def list_zones(self) -> list[str]:
        names: list[str] = []
        url: str | None = self._zones_url
        for _ in range(MAX_PAGES):
            if url is None:
                break
            _, body = await self._call("GET", url, "listing DNS zones")
            values = body.get("value") or [] if isinstance(body, dict) else []
            names += [fqdn_of(z["name"]) for z in values if isinstance(z, dict) and isinstance(z.get("name"), str)]
            url = body.get("nextLink") if isinstance(body, dict) else None
            # A next page is followed only on the API's own origin: the bearer token goes with it.
            if url is not None and urlsplit(url)[:2] != urlsplit(self._api)[:2]:
                raise DnsProviderError("Azure DNS pointed the zone list elsewhere; not followed")
        return names

    def _record_url(self, zone: str, fqdn: str) -> str:
        relative = "@" if fqdn == zone else fqdn[: -len(zone) - 1]
        return f"{self._zones_url}/{quote(zone, safe='')}/TXT/{quote(relative, safe='@')}"

    async def _change(self, fqdn: str, value: str, ttl: int | None, adding: bool) -> None:
        name = fqdn_of(fqdn)
        zone = zone_containing(await self.list_zones(), name)
        url = self._record_url(zone, name)
        for _ in range(ATTEMPTS):
            status, body = await self._call("GET", url, "reading the TXT record set", ok=(200, 404))
            etag = body.get("etag") if status == 200 and isinstance(body, dict) else None
            properties = (body.get("properties") or {}) if status == 200 and isinstance(body, dict) else {}
            values = [v for r in properties.get("TXTRecords") or [] for v in [
                "".join(r.get("value") or []) if isinstance(r, dict) else ""]]
            if adding == (value in values):
                return
            kept = [*values, value] if adding else [v for v in values if v != value]
            condition = {"If-Match": etag} if etag else {"If-None-Match": "*"}
            if kept:
                status, _ = await self._call(
                    "PUT", url, "writing the TXT record set", headers=condition, ok=(200, 201, 412),
                    json={"properties": {"TTL": ttl or properties.get("TTL") or 60,
                                         "TXTRecords": [{"value": [v]} for v in kept]}},
                )
            else:
                status, _ = await self._call("DELETE", url, "removing the TXT record set", headers=condition,
                                             ok=(200, 204, 404, 412))
            if status != 412:
                return
        raise DnsProviderError("Azure DNS: the TXT record set kept changing concurrently")

    async def aclose(self) -> None:
        await self._http.aclose()
