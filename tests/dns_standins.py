"""Stand-ins for the hosted DNS providers' APIs, for tests: real HTTP servers on loopback that speak the documented
shapes of Cloudflare's v4 API, DigitalOcean's v2 API, Azure DNS (ARM, with Entra ID's client-credentials token
endpoint), Google Cloud DNS v1 (with the service-account JWT token endpoint) and ScaiDNS's assumed API
(docs/dns-providers.md). Each checks its credentials as the real one does and keeps records in memory; ``values``
reads a name's TXT values back, ``requests`` counts what was asked.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLOUDFLARE_TOKEN = "cf-token-0123456789abcdef0123456789abcdef"
DIGITALOCEAN_TOKEN = "dop_v1_0123456789abcdef0123456789abcdef0123456789abcdef"
SCAIDNS_KEY = "sdk_live_0123456789abcdef0123456789abcdef"
AZURE_CLIENT_SECRET = "azure~secret~0123456789abcdef0123456789"
AZURE = {"subscription_id": "00000000-1111-2222-3333-444444444444", "resource_group": "dns-rg",
         "tenant_id": "aad-tenant-1", "client_id": "app-client-1"}
GOOGLE_PROJECT = "acme-project"


def google_service_account() -> tuple[str, rsa.RSAPrivateKey]:
    """A service-account key file (JSON) and its key, as the Cloud console downloads it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    document = {"type": "service_account", "project_id": GOOGLE_PROJECT, "private_key_id": "kid-1",
                "private_key": pem, "client_email": "acme-dns@acme-project.iam.gserviceaccount.com",
                "token_uri": "https://oauth2.googleapis.com/token"}
    return json.dumps(document), key


@dataclass
class Record:
    id: str
    name: str  # fqdn, no trailing dot
    value: str
    ttl: int


@dataclass
class StandIn:
    kind: str
    zones: list[str]
    url: str = ""
    records: list[Record] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    google_key: rsa.RSAPrivateKey | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _tokens: set[str] = field(default_factory=set)

    def values(self, fqdn: str) -> list[str]:
        return [r.value for r in self.records if r.name == fqdn]

    def add(self, fqdn: str, value: str, ttl: int = 300) -> Record:
        record = Record(f"r{next(self._ids)}", fqdn, value, ttl)
        self.records.append(record)
        return record

    def zone_of(self, fqdn: str) -> str | None:
        matches = [z for z in self.zones if fqdn == z or fqdn.endswith("." + z)]
        return max(matches, key=len) if matches else None

    # ---- the apps --------------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        getattr(self, f"_{self.kind}_routes")(app.router)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        return await handler(request)

    def _bearer(self, request: web.Request, expected: str | None) -> bool:
        given = request.headers.get("Authorization", "")
        if expected is None:
            return given.removeprefix("Bearer ") in self._tokens
        return given == f"Bearer {expected}"

    # Cloudflare v4: envelope {success, errors, messages, result, result_info}.
    def _cloudflare_routes(self, router: web.UrlDispatcher) -> None:
        def envelope(result: Any, status: int = 200, **extra: Any) -> web.Response:
            return web.json_response({"success": True, "errors": [], "messages": [], "result": result, **extra},
                                     status=status)

        def denied() -> web.Response:
            return web.json_response({"success": False, "errors": [{"code": 9109, "message": "Invalid access token"}],
                                      "messages": [], "result": None}, status=403)

        def zone_name(zone_id: str) -> str | None:
            return next((z for z in self.zones if "cfz-" + z.replace(".", "-") == zone_id), None)

        async def zones(request: web.Request) -> web.Response:
            if not self._bearer(request, CLOUDFLARE_TOKEN):
                return denied()
            page, per_page = int(request.query.get("page", 1)), int(request.query.get("per_page", 20))
            listed = [z for z in self.zones if request.query.get("name") in (None, z)]
            chunk = listed[(page - 1) * per_page: page * per_page]
            total_pages = max(1, -(-len(listed) // per_page))
            return envelope([{"id": "cfz-" + z.replace(".", "-"), "name": z, "status": "active"} for z in chunk],
                            result_info={"page": page, "per_page": per_page, "count": len(chunk),
                                         "total_count": len(listed), "total_pages": total_pages})

        def document(r: Record) -> dict[str, Any]:
            return {"id": r.id, "type": "TXT", "name": r.name, "content": f'"{r.value}"', "ttl": r.ttl}

        async def records(request: web.Request) -> web.Response:
            if not self._bearer(request, CLOUDFLARE_TOKEN):
                return denied()
            zone = zone_name(request.match_info["zone_id"])
            if zone is None:
                return web.json_response({"success": False, "errors": [{"code": 7003, "message": "No route"}]},
                                         status=404)
            if request.method == "POST":
                body = await request.json()
                assert body["type"] == "TXT" and self.zone_of(body["name"]) == zone
                return envelope(document(self.add(body["name"], body["content"].strip('"'), body["ttl"])))
            name = request.query.get("name")
            return envelope([document(r) for r in self.records if self.zone_of(r.name) == zone
                             and name in (None, r.name)])

        async def record(request: web.Request) -> web.Response:
            if not self._bearer(request, CLOUDFLARE_TOKEN):
                return denied()
            self.records = [r for r in self.records if r.id != request.match_info["record_id"]]
            return envelope({"id": request.match_info["record_id"]})

        router.add_get("/client/v4/zones", zones)
        router.add_route("*", "/client/v4/zones/{zone_id}/dns_records", records)
        router.add_delete("/client/v4/zones/{zone_id}/dns_records/{record_id}", record)

    # DigitalOcean v2: record names relative to the domain ("@" for the apex), data unquoted.
    def _digitalocean_routes(self, router: web.UrlDispatcher) -> None:
        def denied() -> web.Response:
            return web.json_response({"id": "unauthorized", "message": "Unable to authenticate you"}, status=401)

        def relative(fqdn: str, zone: str) -> str:
            return "@" if fqdn == zone else fqdn[: -len(zone) - 1]

        async def domains(request: web.Request) -> web.Response:
            if not self._bearer(request, DIGITALOCEAN_TOKEN):
                return denied()
            return web.json_response({"domains": [{"name": z, "ttl": 1800, "zone_file": ""} for z in self.zones],
                                      "links": {}, "meta": {"total": len(self.zones)}})

        async def records(request: web.Request) -> web.Response:
            if not self._bearer(request, DIGITALOCEAN_TOKEN):
                return denied()
            zone = request.match_info["domain"]
            if zone not in self.zones:
                return web.json_response({"id": "not_found", "message": "not found"}, status=404)
            if request.method == "POST":
                body = await request.json()
                fqdn = zone if body["name"] == "@" else f"{body['name']}.{zone}"
                assert body["ttl"] >= 30
                r = self.add(fqdn, body["data"], body["ttl"])
                return web.json_response({"domain_record": {"id": int(r.id[1:]), "type": "TXT",
                                                            "name": body["name"], "data": r.value, "ttl": r.ttl}},
                                         status=201)
            name = request.query.get("name")
            return web.json_response({"domain_records": [
                {"id": int(r.id[1:]), "type": "TXT", "name": relative(r.name, zone), "data": r.value, "ttl": r.ttl}
                for r in self.records if self.zone_of(r.name) == zone and name in (None, r.name)
            ], "links": {}, "meta": {"total": 0}})

        async def record(request: web.Request) -> web.Response:
            if not self._bearer(request, DIGITALOCEAN_TOKEN):
                return denied()
            self.records = [r for r in self.records if r.id != "r" + request.match_info["record_id"]]
            return web.Response(status=204)

        router.add_get("/v2/domains", domains)
        router.add_route("*", "/v2/domains/{domain}/records", records)
        router.add_delete("/v2/domains/{domain}/records/{record_id}", record)

    # ScaiDNS (assumed API, docs/dns-providers.md).
    def _scaidns_routes(self, router: web.UrlDispatcher) -> None:
        def denied() -> web.Response:
            return web.json_response({"error": "invalid_api_key"}, status=401)

        async def domains(request: web.Request) -> web.Response:
            if not self._bearer(request, SCAIDNS_KEY):
                return denied()
            return web.json_response({"domains": [{"name": z} for z in self.zones]})

        async def records(request: web.Request) -> web.Response:
            if not self._bearer(request, SCAIDNS_KEY):
                return denied()
            zone = request.match_info["zone"]
            if request.method == "POST":
                body = await request.json()
                assert self.zone_of(body["name"]) == zone
                r = self.add(body["name"], body["content"], body["ttl"])
                return web.json_response({"id": r.id, "type": "TXT", "name": r.name, "content": r.value}, status=201)
            name = request.query.get("name")
            return web.json_response({"records": [
                {"id": r.id, "type": "TXT", "name": r.name, "content": r.value, "ttl": r.ttl}
                for r in self.records if self.zone_of(r.name) == zone and name in (None, r.name)
            ]})

        async def record(request: web.Request) -> web.Response:
            if not self._bearer(request, SCAIDNS_KEY):
                return denied()
            self.records = [r for r in self.records if r.id != request.match_info["record_id"]]
            return web.Response(status=204)

        router.add_get("/v1/domains", domains)
        router.add_route("*", "/v1/domains/{zone}/records", records)
        router.add_delete("/v1/domains/{zone}/records/{record_id}", record)

    # Azure: Entra ID's token endpoint and ARM's DNS zones and record sets, with ETags.
    def _azure_routes(self, router: web.UrlDispatcher) -> None:
        base = (f"/subscriptions/{AZURE['subscription_id']}/resourceGroups/{AZURE['resource_group']}"
                "/providers/Microsoft.Network/dnsZones")

        async def token(request: web.Request) -> web.Response:
            form = await request.post()
            if (request.match_info["tenant"], form.get("grant_type"), form.get("client_id"),
                    form.get("client_secret"), form.get("scope")) != (
                    AZURE["tenant_id"], "client_credentials", AZURE["client_id"], AZURE_CLIENT_SECRET,
                    "https://management.azure.com/.default"):
                return web.json_response({"error": "invalid_client"}, status=401)
            issued = f"aad-{next(self._ids)}"
            self._tokens.add(issued)
            return web.json_response({"token_type": "Bearer", "expires_in": 3599, "access_token": issued})

        def checked(request: web.Request) -> web.Response | None:
            if not self._bearer(request, None):
                return web.json_response({"error": {"code": "AuthenticationFailed"}}, status=401)
            if request.query.get("api-version") != "2018-05-01":
                return web.json_response({"error": {"code": "MissingApiVersionParameter"}}, status=400)
            return None

        async def zones(request: web.Request) -> web.Response:
            refused = checked(request)
            if refused is not None:
                return refused
            return web.json_response({"value": [{"id": f"{base}/{z}", "name": z, "type": "Microsoft.Network/dnszones"}
                                                for z in self.zones]})

        def etag(fqdn: str) -> str:
            return "etag-" + "|".join(sorted(r.id for r in self.records if r.name == fqdn))

        async def record_set(request: web.Request) -> web.Response:
            refused = checked(request)
            if refused is not None:
                return refused
            zone, relative = request.match_info["zone"], request.match_info["name"]
            if zone not in self.zones:
                return web.json_response({"error": {"code": "ParentResourceNotFound"}}, status=404)
            fqdn = zone if relative == "@" else f"{relative}.{zone}"
            existing = [r for r in self.records if r.name == fqdn]
            if request.method == "GET":
                if not existing:
                    return web.json_response({"error": {"code": "NotFound"}}, status=404)
                return web.json_response({"name": relative, "etag": etag(fqdn), "properties": {
                    "fqdn": fqdn + ".", "TTL": existing[0].ttl, "TXTRecords": [{"value": [r.value]} for r in existing]
                }})
            if request.headers.get("If-Match") not in (None, etag(fqdn)) or (
                    request.headers.get("If-None-Match") == "*" and existing):
                return web.json_response({"error": {"code": "PreconditionFailed"}}, status=412)
            self.records = [r for r in self.records if r.name != fqdn]
            if request.method == "DELETE":
                return web.Response(status=200)
            body = await request.json()
            for txt in body["properties"]["TXTRecords"]:
                self.add(fqdn, "".join(txt["value"]), body["properties"]["TTL"])
            return web.json_response({"name": relative, "etag": etag(fqdn)}, status=201 if not existing else 200)

        router.add_post("/{tenant}/oauth2/v2.0/token", token)
        router.add_get(base, zones)
        router.add_route("*", base + "/{zone}/TXT/{name}", record_set)

    # Google Cloud DNS v1 and the OAuth 2.0 token endpoint for service accounts (JWT bearer grant).
    def _google_routes(self, router: web.UrlDispatcher) -> None:
        base = f"/dns/v1/projects/{GOOGLE_PROJECT}/managedZones"

        def zone_id(zone: str) -> str:
            return zone.replace(".", "-")

        async def token(request: web.Request) -> web.Response:
            form = await request.post()
            assert self.google_key is not None
            try:
                claims = jwt.decode(str(form.get("assertion")), self.google_key.public_key(), algorithms=["RS256"],
                                    audience=self.url + "/token")
            except jwt.PyJWTError:
                return web.json_response({"error": "invalid_grant"}, status=400)
            if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or "clouddns" not in claims.get(
                    "scope", "") or claims["exp"] < time.time():
                return web.json_response({"error": "invalid_scope"}, status=400)
            issued = f"ya29.{next(self._ids)}"
            self._tokens.add(issued)
            return web.json_response({"access_token": issued, "expires_in": 3599, "token_type": "Bearer"})

        def denied() -> web.Response:
            return web.json_response({"error": {"code": 401, "status": "UNAUTHENTICATED"}}, status=401)

        def rrsets(zone: str, name: str | None) -> list[dict[str, Any]]:
            names = sorted({r.name for r in self.records if self.zone_of(r.name) == zone})
            return [{"kind": "dns#resourceRecordSet", "name": n + ".", "type": "TXT",
                     "ttl": next(r.ttl for r in self.records if r.name == n),
                     "rrdatas": [f'"{r.value}"' for r in self.records if r.name == n]}
                    for n in names if name in (None, n + ".")]

        def zone_of_id(zid: str) -> str | None:
            return next((z for z in self.zones if zone_id(z) == zid), None)

        async def zones(request: web.Request) -> web.Response:
            if not self._bearer(request, None):
                return denied()
            return web.json_response({"managedZones": [{"name": zone_id(z), "dnsName": z + "."} for z in self.zones]})

        async def list_rrsets(request: web.Request) -> web.Response:
            if not self._bearer(request, None):
                return denied()
            zone = zone_of_id(request.match_info["zone"])
            if zone is None:
                return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
            return web.json_response({"rrsets": rrsets(zone, request.query.get("name"))})

        async def change(request: web.Request) -> web.Response:
            if not self._bearer(request, None):
                return denied()
            zone = zone_of_id(request.match_info["zone"])
            assert zone is not None
            body = await request.json()
            current = {r["name"]: r for r in rrsets(zone, None)}
            for deletion in body.get("deletions") or []:
                if current.get(deletion["name"]) != deletion:
                    return web.json_response({"error": {"code": 412, "status": "FAILED_PRECONDITION"}}, status=412)
            for deletion in body.get("deletions") or []:
                self.records = [r for r in self.records if r.name + "." != deletion["name"]]
            for addition in body.get("additions") or []:
                if addition["name"] in {r.name + "." for r in self.records}:
                    return web.json_response({"error": {"code": 409, "status": "ALREADY_EXISTS"}}, status=409)
                for data in addition["rrdatas"]:
                    self.add(addition["name"].rstrip("."), data.strip('"'), addition["ttl"])
            return web.json_response({"kind": "dns#change", "id": str(next(self._ids)), "status": "done"})

        router.add_post("/token", token)
        router.add_get(base, zones)
        router.add_get(base + "/{zone}/rrsets", list_rrsets)
        router.add_post(base + "/{zone}/changes", change)


@asynccontextmanager
async def standing_in(kind: str, zones: list[str], **options: Any) -> AsyncIterator[StandIn]:
    standin = StandIn(kind, zones, **options)
    server = TestServer(standin.app(), host="127.0.0.1")
    await server.start_server()
    standin.url = str(server.make_url("")).rstrip("/")
    try:
        yield standin
    finally:
        await server.close()


def client_settings(standin: StandIn, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The credentials and config of a provider of the stand-in's kind that points at it."""
    kind, url = standin.kind, standin.url
    if kind == "cloudflare":
        return {"api_token": CLOUDFLARE_TOKEN, **overrides}, {"api_base_url": url + "/client/v4"}
    if kind == "digitalocean":
        return {"api_token": DIGITALOCEAN_TOKEN, **overrides}, {"api_base_url": url}
    if kind == "scaidns":
        return {"base_url": url, "api_key": SCAIDNS_KEY, **overrides}, {}
    if kind == "azure":
        return {**AZURE, "client_secret": AZURE_CLIENT_SECRET, **overrides}, {
            "api_base_url": url, "login_base_url": url}
    if kind == "google":
        raise ValueError("google needs its service account: use google_settings")
    raise ValueError(kind)


def google_settings(standin: StandIn, account_json: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"project_id": GOOGLE_PROJECT, "service_account_json": account_json}, {
        "api_base_url": standin.url + "/dns/v1", "token_url": standin.url + "/token"}
