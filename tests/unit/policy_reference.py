"""A reference model of policy evaluation, written to be obviously right rather than fast: plain recursion over the
spec's words, plain dicts in, no shared code with the engine (scaivault.domain.policies, scaivault.domain.globs).

Spec (core-concepts/policies-and-permissions): patterns are anchored at the start; `**` matches any number of path
segments including zero; `*` exactly one segment (inside a segment: any run of characters); `?` exactly one
character; a leading `**/` needs a parent segment (`**/ssl/*` does not match `ssl/cert`). Every policy bound to the
caller is evaluated; allowed if any rule's pattern matches and all its conditions hold; `admin` means every permission.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DEFAULT_MFA_MAX_AGE = timedelta(hours=12)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def segment_matches(pattern: str, text: str) -> bool:
    if pattern == "":
        return text == ""
    first, rest = pattern[0], pattern[1:]
    if first == "*":  # any run of characters, the empty run included
        return any(segment_matches(rest, text[cut:]) for cut in range(len(text) + 1))
    if text == "":
        return False
    if first == "?" or first == text[0]:
        return segment_matches(rest, text[1:])
    return False


def glob_matches(pattern: str, path: str) -> bool:
    pattern_segments = pattern.split("/")
    path_segments = path.split("/")

    def match(i: int, j: int) -> bool:
        """Do pattern_segments[i:] match path_segments[j:]?"""
        if i == len(pattern_segments):
            return j == len(path_segments)
        segment = pattern_segments[i]
        if segment == "**":
            needs_parent = i == 0 and len(pattern_segments) > 1
            fewest = 1 if needs_parent else 0
            return any(match(i + 1, k) for k in range(j + fewest, len(path_segments) + 1))
        if j == len(path_segments):
            return False
        return segment_matches(segment, path_segments[j]) and match(i + 1, j + 1)

    return match(0, 0)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def in_time_window(window: dict[str, Any], at: datetime) -> bool:
    """Is ``at`` inside an occurrence of the window? Occurrences start on each listed day at ``start`` and run to
    ``end`` that day, or to ``end`` the next day when ``end`` is not after ``start``."""
    local = at.astimezone(ZoneInfo(window.get("timezone", "UTC"))).replace(tzinfo=None)
    days = window.get("days", DAY_NAMES)
    start, end = _minutes(window["start"]), _minutes(window["end"])
    for days_back in (0, 1):
        day = (local - timedelta(days=days_back)).date()
        if DAY_NAMES[day.weekday()] not in days:
            continue
        midnight = datetime(day.year, day.month, day.day)
        opens = midnight + timedelta(minutes=start)
        closes = midnight + timedelta(minutes=end) if end > start else midnight + timedelta(days=1, minutes=end)
        if opens <= local < closes:
            return True
    return False


def first_failed_condition(conditions: dict[str, Any], at: datetime, ip: str | None,
                           mfa_at: datetime | None) -> str | None:
    if "ip_ranges" in conditions:
        inside = False
        if ip is not None:
            address = ipaddress.ip_address(ip)
            for cidr in conditions["ip_ranges"]:
                network = ipaddress.ip_network(cidr, strict=False)
                if network.version == address.version and address in network:
                    inside = True
        if not inside:
            return "ip_ranges"
    if "time_windows" in conditions and not any(in_time_window(w, at) for w in conditions["time_windows"]):
        return "time_windows"
    if conditions.get("require_mfa"):
        max_age = DEFAULT_MFA_MAX_AGE
        if "mfa_max_age" in conditions:
            text = conditions["mfa_max_age"]
            max_age = timedelta(seconds=int(text[:-1]) * UNITS[text[-1]])
        if mfa_at is None or at - mfa_at > max_age:
            return "require_mfa"
    return None


def evaluate(policies: list[dict[str, Any]], identity: str, groups: list[str], path: str, permission: str,
             at: datetime, ip: str | None, mfa_at: datetime | None) -> tuple[bool, str | None, int | None, str | None]:
    """(allowed, policy id, rule index, failed condition) as the spec describes the evaluation."""
    identity = identity.lower()
    groups = [g.lower() for g in groups]
    first_failure: tuple[bool, str | None, int | None, str | None] | None = None
    for policy in sorted(policies, key=lambda p: p["id"]):
        if not policy["is_active"]:
            continue
        bound = False
        for binding in policy["bindings"]:
            expired = binding["expires_at"] is not None and at >= binding["expires_at"]
            if expired:
                continue
            if binding["identity_type"] == "group" and binding["identity_id"] in groups:
                bound = True
            if binding["identity_type"] != "group" and binding["identity_id"] == identity:
                bound = True
        if not bound:
            continue
        for index, rule in enumerate(policy["rules"]):
            if permission not in rule["permissions"] and "admin" not in rule["permissions"]:
                continue
            if not glob_matches(rule["path_pattern"], path):
                continue
            failed = first_failed_condition(rule.get("conditions", {}), at, ip, mfa_at)
            if failed is None:
                return True, policy["id"], index, None
            if first_failure is None:
                first_failure = (False, policy["id"], index, failed)
    return first_failure or (False, None, None, None)
