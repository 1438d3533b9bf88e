"""Who a command acts for: every area's commands take an ``Actor``."""

from __future__ import annotations

from dataclasses import dataclass

from scaivault.auth.caller import Caller


@dataclass(frozen=True)
class Actor:
    """Who a command acts for. ``caller``: the API caller, whose policies the command enforces; None for the server
    itself or an operator with the database (the CLI, housekeeping), who are not subject to policies."""

    identity_id: str
    request_id: str | None
    caller: Caller | None = None

    @classmethod
    def of(cls, caller: Caller, request_id: str | None) -> Actor:
        return cls(identity_id=caller.principal.identity_id, request_id=request_id, caller=caller)
