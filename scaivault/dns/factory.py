"""A client of the port for a provider's type, credentials and config, as stored (``scaivault.domain.dns_providers``
checked them), and the verification that creation and ``POST .../verify`` run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from scaivault.dns.port import DnsProviderError, DnsRecords
from scaivault.domain.dns_providers import zones_of
from scaivault.domain.errors import InvalidConfig
from scaivault.egress import IPNetwork

MAX_ZONES_SHOWN = 1000


def open_client(
    provider_type: str, credentials: Mapping[str, Any], config: Mapping[str, Any], *,
    allow: Sequence[IPNetwork] = (), ambient_aws_credentials: bool = False,
) -> DnsRecords:
    c, base = credentials, config.get("api_base_url")
    if provider_type == "powerdns":
        from scaivault.dns.powerdns import PowerDnsRecords

        return PowerDnsRecords(api_url=c["api_url"], api_key=c["api_key"], server_id=c.get("server_id", "localhost"),
                               allow=allow)
    if provider_type == "cloudflare":
        from scaivault.dns.cloudflare import CloudflareRecords

        return CloudflareRecords(api_token=c["api_token"], api_base_url=base, allow=allow)
    if provider_type == "digitalocean":
        from scaivault.dns.digitalocean import DigitalOceanRecords

        return DigitalOceanRecords(api_token=c["api_token"], api_base_url=base, allow=allow)
    if provider_type == "scaidns":
        from scaivault.dns.scaidns import ScaiDnsRecords

        return ScaiDnsRecords(base_url=c["base_url"], api_key=c["api_key"], allow=allow)
    if provider_type == "azure":
        from scaivault.dns.azure import AzureRecords

        return AzureRecords(
            subscription_id=c["subscription_id"], resource_group=c["resource_group"], tenant_id=c["tenant_id"],
            client_id=c["client_id"], client_secret=c["client_secret"], api_base_url=base,
            login_base_url=config.get("login_base_url"), allow=allow,
        )
    if provider_type == "google":
        from scaivault.dns.google import GoogleRecords

        return GoogleRecords(project_id=c["project_id"], service_account_json=c["service_account_json"],
                             api_base_url=base, token_url=config.get("token_url"), allow=allow)
    if provider_type == "route53":
        from scaivault.dns.route53 import Route53Records

        return Route53Records(
            access_key_id=c.get("access_key_id"), secret_access_key=c.get("secret_access_key"),
            session_token=c.get("session_token"), region=c.get("region", "us-east-1"),
            endpoint_url=config.get("endpoint_url"), allow=allow, ambient_credentials=ambient_aws_credentials,
        )
    raise ValueError(f"unknown DNS provider type {provider_type!r}")


async def verify_provider(
    provider_type: str, credentials: Mapping[str, Any], config: Mapping[str, Any], managed_zones: Sequence[str], *,
    allow: Sequence[IPNetwork] = (), ambient_aws_credentials: bool = False,
) -> list[str]:
    """List the zones with the credentials; each managed zone must be among them. Returns the managed zones
    (``*.`` folded into their zone). ``InvalidConfig`` (400) with the reason otherwise; no credential is in it."""
    try:
        client = open_client(provider_type, credentials, config, allow=allow,
                             ambient_aws_credentials=ambient_aws_credentials)
    except DnsProviderError as exc:
        raise InvalidConfig(f"DNS provider verification failed: {exc}", reason=str(exc)) from None
    try:
        visible = set(await client.list_zones())
    except DnsProviderError as exc:
        raise InvalidConfig(
            f"DNS provider verification failed: {exc}", reason=str(exc), provider_status=exc.status
        ) from None
    finally:
        await client.aclose()
    wanted = zones_of(managed_zones)
    missing = [zone for zone in wanted if zone not in visible]
    if missing:
        raise InvalidConfig(
            "DNS provider verification failed: the credentials cannot see every managed zone",
            reason="zones not found", missing_zones=missing,
            visible_zones=sorted(visible)[:MAX_ZONES_SHOWN],
        )
    return wanted
