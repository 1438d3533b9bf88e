"""A stand-in ScaiKey: a small aiohttp app speaking the directory JSON documented in scaivault/identity/scaikey.py
(client-credentials tokens, the partners, tenants, users and groups, paged). Tests serve it on loopback."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CLIENT_ID, CLIENT_SECRET = "scaivault-sync", "standin-client-secret-value"


def directory() -> dict[str, Any]:
    return {
        "partners": [{"id": "ptn_acme", "name": "Acme", "slug": "acme", "region": "eu-west-1", "status": "ACTIVE"}],
        "tenants": [
            {"id": "tnt_acme_prod", "partner_id": "ptn_acme", "name": "Acme prod", "status": "ACTIVE"},
            {"id": "tnt_acme_dev", "partner_id": "ptn_acme", "name": "Acme dev", "status": "ACTIVE"},
        ],
        "users": {
            "tnt_acme_prod": [
                {"id": "usr_alice", "email": "Alice@Acme.example", "display_name": "Alice", "status": "ACTIVE",
                 "mfa_enabled": True, "groups": ["grp_sre"], "roles": ["tenant_admin", "not_a_scaivault_role"]},
                {"id": "usr_bob", "email": "bob@acme.example", "display_name": "Bob", "status": "ACTIVE",
                 "mfa_enabled": False, "groups": ["grp_sre", "grp_dev"], "roles": []},
                {"id": "usr_bad", "email": "not an address", "display_name": "Broken"},
            ],
            "tnt_acme_dev": [
                {"id": "usr_carol", "email": "carol@acme.example", "display_name": "Carol", "groups": ["grp_dev2"]},
            ],
        },
        "groups": {
            "tnt_acme_prod": [
                {"id": "grp_sre", "name": "sre", "description": "Site reliability", "status": "ACTIVE"},
                {"id": "grp_dev", "name": "developers", "status": "ACTIVE"},
            ],
            "tnt_acme_dev": [{"id": "grp_dev2", "name": "developers"}],
        },
    }


@dataclass
class ScaiKeyStandIn:
    """A small ScaiKey: client-credentials tokens, and the directory, paged. ``fail_with`` makes every directory
    request answer that status; ``tokens_issued`` counts token grants."""

    data: dict[str, Any] = field(default_factory=directory)
    require_credentials: bool = True
    fail_with: int | None = None
    tokens_issued: int = 0
    seen_authorization: list[str | None] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/api/v1/partners", self._list(lambda r: self.data["partners"], "partners"))
        app.router.add_get("/api/v1/tenants", self._list(self._tenants, "tenants"))
        app.router.add_get(
            "/api/v1/tenants/{tenant_id}/users",
            self._list(lambda r: self.data["users"].get(r.match_info["tenant_id"], []), "users"),
        )
        app.router.add_get(
            "/api/v1/tenants/{tenant_id}/groups",
            self._list(lambda r: self.data["groups"].get(r.match_info["tenant_id"], []), "groups"),
        )
        return app

    def _tenants(self, request: web.Request) -> list[Any]:
        partner = request.query.get("partner_id")
        return [t for t in self.data["tenants"] if partner is None or t["partner_id"] == partner]

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != (
            "client_credentials", CLIENT_ID, CLIENT_SECRET
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.tokens_issued += 1
        return web.json_response({"access_token": f"standin-token-{self.tokens_issued}", "expires_in": 3600})

    def _list(self, items: Any, key: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            self.seen_authorization.append(request.headers.get("Authorization"))
            if self.require_credentials and not (request.headers.get("Authorization") or "").startswith(
                "Bearer standin-token-"
            ):
                return web.json_response({"error": "unauthorized"}, status=401)
            if self.fail_with is not None:
                return web.json_response({"error": "broken", "leak": CLIENT_SECRET}, status=self.fail_with)
            everything = items(request)
            page, size = int(request.query["page"]), int(request.query["page_size"])
            chunk = everything[(page - 1) * size : page * size]
            return web.json_response({key: copy.deepcopy(chunk), "total": len(everything)})

        return handler
