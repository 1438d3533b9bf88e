"""Google Cloud DNS, through its v1 REST API with a service account: a JWT signed with the account's key (RS256,
PyJWT) exchanged for an access token (``urn:ietf:params:oauth:grant-type:jwt-bearer``, scope
``ndev.clouddns.readwrite``), then managed zones at ``/projects/{project}/managedZones`` and TXT record sets changed by
``POST .../managedZones/{zone}/changes`` with the old set in ``deletions`` and the new in ``additions``: Cloud DNS
applies a change only when the deletions match exactly, so a concurrent change makes it fail (412/409) instead of
being overwritten, and it is tried again on fresh state.

The token endpoint is the configured ``token_url`` or Google's own: never the ``token_uri`` of the key file, so a key
file cannot send a signed assertion elsewhere."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import jwt

from scaivault.dns.http import GuardedHttp
from scaivault.dns.port import DnsProviderError, WholeRecordSetRecords, fqdn_of, quoted, unquoted, zone_containing
from scaivault.egress import IPNetwork

API_BASE_URL = "https://dns.googleapis.com/dns/v1"
TOKEN_URL = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/ndev.clouddns.readwrite"
MAX_PAGES = 100
ATTEMPTS = 3


class GoogleRecords(WholeRecordSetRecords):
    def __init__(
        self, *, project_id: str, service_account_json: str, api_base_url: str | None = None,
        token_url: str | None = None, allow: Sequence[IPNetwork] = (),
    ) -> None:
        account = json.loads(service_account_json)
        self._email = str(account["client_email"])
        self._private_key = str(account["private_key"])
        self._key_id = account.get("private_key_id")
        self._project = quote(project_id, safe="")
        self._api = (api_base_url or API_BASE_URL).rstrip("/")
        self._token_url = token_url or TOKEN_URL
        self._http = GuardedHttp("Google Cloud DNS", allow, confidential=[self._private_key])
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def _bearer(self) -> dict[str, str]:
        if self._token is None or self._token[1] <= time.monotonic():
            now = int(time.time())
            try:
                assertion = jwt.encode(
                    {"iss": self._email, "scope": SCOPE, "aud": self._token_url, "iat": now, "exp": now + 3600},
                    self._private_key, algorithm="RS256",
                    headers={"kid": self._key_id} if isinstance(self._key_id, str) else None,
                )
            except (ValueError, TypeError, jwt.PyJWTError):
                raise DnsProviderError("Google Cloud DNS: the service account's private key cannot sign") from None
            status, body = await self._http.request("POST", self._token_url, data={
                "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion,
            })
            if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
                detail = body.get("error") if isinstance(body, dict) else None
                raise self._http.failure(status, "getting an access token", detail)
            lifetime = float(body.get("expires_in") or 300)
            self._token = (body["access_token"], time.monotonic() + max(lifetime - 60, 30))
        return {"Authorization": f"Bearer {self._token[0]}", "Accept": "application/json"}

    async def _call(
        self, method: str, path: str, what: str, *, params: dict[str, str] | None = None, json: Any = None,
        ok: tuple[int, ...] = (200,),
    ) -> tuple[int, Any]:
        status, body = await self._http.request(method, f"{self._api}/projects/{self._project}{path}",
                                                headers=await self._bearer(), params=params, json=json)
        if status not in ok:
            detail = ((body.get("error") or {}).get("status") if isinstance(body, dict) else None)
            raise self._http.failure(status, what, detail if isinstance(detail, str) else None)
        return status, body

    async def _zones(self) -> list[dict[str, Any]]:
        zones: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            _, body = await self._call("GET", "/managedZones", "listing managed zones",
                                       params={"pageToken": token} if token else None)
            zones += [z for z in (body or {}).get("managedZones") or []
                      if isinstance(z, dict) and isinstance(z.get("dnsName"), str) and isinstance(z.get("name"), str)]
            token = (body or {}).get("nextPageToken")
            if not token:
                break
        return zones

    async def list_zones(self) -> list[str]:
        return [fqdn_of(z["dnsName"]) for z in await self._zones()]

    async def _change(self, fqdn: str, value: str, ttl: int | None, adding: bool) -> None:
        name = fqdn_of(fqdn)
        zones = await self._zones()
        zone_name = zone_containing([z["dnsName"] for z in zones], name)
        zone = quote(next(z["name"] for z in zones if fqdn_of(z["dnsName"]) == zone_name), safe="")
        for _ in range(ATTEMPTS):
            _, body = await self._call("GET", f"/managedZones/{zone}/rrsets", "reading the TXT record set",
                                       params={"name": name + ".", "type": "TXT"})
            current = next((r for r in (body or {}).get("rrsets") or []
                            if isinstance(r, dict) and r.get("type") == "TXT" and fqdn_of(str(r.get("name"))) == name),
                           None)
            values = [unquoted(str(v)) for v in (current or {}).get("rrdatas") or []]
            if adding == (value in values):
                return
            kept = [*values, value] if adding else [v for v in values if v != value]
            change: dict[str, Any] = {"deletions": [current] if current else [], "additions": []}
            if kept:
                change["additions"] = [{"name": name + ".", "type": "TXT",
                                        "ttl": ttl or (current or {}).get("ttl") or 60,
                                        "rrdatas": [quoted(v) for v in kept]}]
            status, _ = await self._call("POST", f"/managedZones/{zone}/changes", "changing the TXT record set",
                                         json=change, ok=(200, 409, 412))
            if status == 200:
                return
        raise DnsProviderError("Google Cloud DNS: the TXT record set kept changing concurrently")

    async def aclose(self) -> None:
        await self._http.aclose()
