"""The names and descriptions people give managed objects (policies, rotation and secret policies, webhooks,
subscriptions): one rule for all, each caller raising the error its own API speaks."""

from __future__ import annotations

import re
from typing import TypeGuard

from scaivault.domain.errors import ValidationFailed

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_LENGTH = 128
MAX_DESCRIPTION_LENGTH = 1024


def clean_name(value: object) -> str | None:
    """The name without surrounding blanks, or None when ``value`` is not 1-128 printable characters."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_LENGTH:
        return None
    if CONTROL_CHARACTERS.search(value):
        return None
    return value.strip()


def is_description(value: object) -> TypeGuard[str | None]:
    """None (no description) or a string of at most 1024 characters."""
    return value is None or (isinstance(value, str) and len(value) <= MAX_DESCRIPTION_LENGTH)


def field_error(field: str, message: str) -> ValidationFailed:
    """422 ``validation_error`` naming one field."""
    return ValidationFailed(fields=[{"field": field, "message": message}])


def check_name(name: object) -> str:
    """A managed object's name, cleaned, or 422 naming ``name``."""
    cleaned = clean_name(name)
    if cleaned is None:
        raise field_error("name", f"1-{MAX_NAME_LENGTH} printable characters")
    return cleaned


def check_description(description: object) -> str | None:
    if not is_description(description):
        raise field_error("description", f"a string of at most {MAX_DESCRIPTION_LENGTH} characters")
    return description


def check_is_active(is_active: object) -> bool:
    if not isinstance(is_active, bool):
        raise field_error("is_active", "must be true or false")
    return is_active
