"""Every route the app serves is declared: it has a rate-limit category (or is deliberately unlimited) and an
audit action (or deliberately leaves no access record)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from scaivault.domain.audit import ACTIONS
from scaivault.http.app import ROUTE_ACTIONS
from scaivault.http.routing import UNKNOWN_ACTION
from scaivault.ratelimit.categories import Unmapped, category_of


def test_every_route_of_the_app_has_a_category_or_is_deliberately_unlimited(client: TestClient) -> None:
    """A new endpoint without a row in ROUTES fails here instead of going unlimited."""
    unmapped = []
    for route in client.app.router.routes():
        try:
            category_of(route.method, route.resource.canonical)
        except Unmapped:
            unmapped.append(f"{route.method} {route.resource.canonical}")
    assert unmapped == []


def test_every_route_declares_its_audit_action(client: TestClient) -> None:
    actions = client.app[ROUTE_ACTIONS]
    undeclared = [
        f"{route.method} {route.resource.canonical}"
        for route in client.app.router.routes()
        if actions.get(route, UNKNOWN_ACTION) == UNKNOWN_ACTION
    ]
    assert undeclared == []


def test_every_audited_action_can_be_filtered_on(client: TestClient) -> None:
    """``GET /v1/audit/logs?action=`` accepts every action a route records (ACTIONS), else its entries can be seen
    but not asked for."""
    recorded = {action for action in client.app[ROUTE_ACTIONS].values() if isinstance(action, str)}
    assert sorted(recorded - ACTIONS - {UNKNOWN_ACTION}) == []
