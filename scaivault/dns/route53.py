"""AWS Route 53, through boto3 (the ``aws`` extra). Hosted zones by ``ListHostedZones``; a TXT record set changed by a
change batch that UPSERTs the whole set (its values merged with the one added), or DELETEs it exactly as read when
its last value goes. boto3 blocks, so every call runs in a thread.

Credentials are the provider's own keys. Without keys the server would act with its own AWS role, which is the
operator's, not the tenant's: that is refused unless the operator allowed it (``ambient_credentials``). With an
``endpoint_url`` (an emulator, a private endpoint) the egress guard checks its host and the client sends every
request to the checked address (``scaivault/egress_botocore.py``); without one, AWS's own endpoint is used.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from scaivault import egress
from scaivault.dns.port import DnsProviderError, WholeRecordSetRecords, fqdn_of, quoted, unquoted, zone_containing

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 20
MAX_PAGES = 100


class Route53Records(WholeRecordSetRecords):
    def __init__(
        self, *, access_key_id: str | None = None, secret_access_key: str | None = None,
        session_token: str | None = None, region: str = "us-east-1", endpoint_url: str | None = None,
        allow: Sequence[egress.IPNetwork] = (), ambient_credentials: bool = False,
    ) -> None:
        if access_key_id is None and not ambient_credentials:
            raise DnsProviderError(
                "Route 53: credentials are required (this server does not lend its own AWS role to tenants)"
            )
        self._keys = (access_key_id, secret_access_key, session_token)
        self._region = region
        self._endpoint_url = endpoint_url
        self._allow = tuple(allow)
        self._client: Any = None
        self._closing: list[Any] = []
        self._lock = asyncio.Lock()

    async def _open(self) -> Any:
        if self._client is None:
            target = None
            if self._endpoint_url:
                try:
                    target = await egress.pin_url(self._endpoint_url, self._allow)
                except egress.EgressRefused as refused:
                    raise DnsProviderError(f"Route 53: {refused.public_message}") from None
            self._client, self._closing = await asyncio.to_thread(self._build, target)
        return self._client

    def _build(self, target: egress.PinnedTarget | None) -> tuple[Any, list[Any]]:
        import boto3
        from botocore.config import Config

        from scaivault.egress_botocore import pin_client

        config = Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 3, "mode": "standard"}, ignore_configured_endpoint_urls=True,
        )
        access_key_id, secret_access_key, session_token = self._keys
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
            aws_session_token=session_token, region_name=self._region,
        )
        client = session.client("route53", endpoint_url=self._endpoint_url, config=config)
        if target is None:
            return client, [client]
        return client, [pin_client(client, target), client]

    async def _call(self, what: str, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        client = await self._open()
        try:
            return await asyncio.to_thread(getattr(client, operation), **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = "".join(c for c in str(error.get("Code", "")) if c.isalnum())[:64] or "an unrecognised error"
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise DnsProviderError(f"Route 53 refused {what}: {code}", status=status) from None
        except NoCredentialsError:
            raise DnsProviderError("Route 53: no credentials") from None
        except egress.EgressRefused as refused:
            raise DnsProviderError(f"Route 53: {refused.public_message}") from None
        except BotoCoreError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, egress.EgressRefused):
                raise DnsProviderError(f"Route 53: {cause.public_message}") from None
            raise DnsProviderError(f"Route 53: {what} failed ({type(exc).__name__})") from None

    async def _zones(self) -> list[dict[str, Any]]:
        zones: list[dict[str, Any]] = []
        marker: str | None = None
        for _ in range(MAX_PAGES):
            page = await self._call("listing hosted zones", "list_hosted_zones",
                                    **({"Marker": marker} if marker else {}))
            zones += [z for z in page.get("HostedZones") or [] if not (z.get("Config") or {}).get("PrivateZone")]
            marker = page.get("NextMarker") if page.get("IsTruncated") else None
            if marker is None:
                break
        return zones

    async def list_zones(self) -> list[str]:
        return [fqdn_of(z["Name"]) for z in await self._zones()]

    async def _change(self, fqdn: str, value: str, ttl: int | None, adding: bool) -> None:
        name = fqdn_of(fqdn)
        zones = await self._zones()
        zone = zone_containing([z["Name"] for z in zones], name)
        zone_id = next(z["Id"] for z in zones if fqdn_of(z["Name"]) == zone)
        listed = await self._call("reading the TXT record set", "list_resource_record_sets", HostedZoneId=zone_id,
                                  StartRecordName=name + ".", StartRecordType="TXT", MaxItems="1")
        current = next((r for r in listed.get("ResourceRecordSets") or []
                        if r.get("Type") == "TXT" and fqdn_of(_decoded(r.get("Name", ""))) == name), None)
        values = [unquoted(r["Value"]) for r in (current or {}).get("ResourceRecords") or []]
        if adding == (value in values):
            return
        kept = [*values, value] if adding else [v for v in values if v != value]
        change: dict[str, Any]
        if kept:
            change = {"Action": "UPSERT", "ResourceRecordSet": {
                "Name": name + ".", "Type": "TXT", "TTL": ttl or (current or {}).get("TTL") or 60,
                "ResourceRecords": [{"Value": quoted(v)} for v in kept],
            }}
        else:
            change = {"Action": "DELETE", "ResourceRecordSet": current}
        await self._call("changing the TXT record set", "change_resource_record_sets", HostedZoneId=zone_id,
                         ChangeBatch={"Comment": "ScaiVault ACME DNS-01", "Changes": [change]})

    async def aclose(self) -> None:
        for resource in self._closing:
            await asyncio.to_thread(resource.close)
        self._closing = []
        self._client = None


def _decoded(name: str) -> str:
    """Route 53 returns some characters of names octal-escaped (``\\052`` for ``*``)."""
    return name.replace("\\052", "*").replace("\\137", "_")
