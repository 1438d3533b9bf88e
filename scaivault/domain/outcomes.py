"""What a command did, in the domain's words: the HTTP edge turns an outcome into a status code."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    CREATED = "created"  # a new resource exists
    ACCEPTED = "accepted"  # work was recorded and runs in the background
    REMOVED = "removed"  # the thing is gone; nothing to show
