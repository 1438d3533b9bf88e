"""Query strings, parsed one way: each endpoint declares a pydantic model of its parameters.

A parameter that does not fit is 400 ``invalid_request`` naming it (``details.parameter``). Unknown parameters are
ignored, as HTTP APIs commonly do; a parameter given twice counts once (the first). Values are text, so the types
here take text strictly: a whole number is ASCII digits only (no sign, no ``_``, no spaces), a boolean is
``true``/``false`` (or ``1``/``0``), a timestamp is ISO 8601.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, TypeVar, cast

import annotated_types
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import InvalidDuration, InvalidRequest
from scaivault.domain.timestamps import parse_timestamp

Q = TypeVar("Q", bound="QueryModel")
MAX_INT32 = 2**31 - 1


class QueryModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


def digits(raw: object) -> int:
    # Length first: a long run of digits would cost (and fail) int().
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= len(str(MAX_INT32))):
        raise ValueError("not a whole number")
    return int(raw)


def _flag(raw: object) -> bool:
    text = raw.lower() if isinstance(raw, str) else raw
    if text not in ("true", "false", "1", "0"):
        raise ValueError("must be true or false")
    return text in ("true", "1")


def _timestamp(raw: object) -> datetime:
    try:
        return parse_timestamp(str(raw))
    except ValueError:
        raise ValueError("must be an ISO 8601 timestamp") from None


# A whole number from 1 to 2^31 - 1 unless its field says otherwise (``Field(ge=..., le=...)``).
WholeNumber = Annotated[int, BeforeValidator(digits), Field(ge=1, le=MAX_INT32)]
Limit = Annotated[int, BeforeValidator(digits), Field(ge=1, le=1000)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Timestamp = Annotated[datetime, BeforeValidator(_timestamp)]


def _within(raw: object) -> timedelta:
    try:
        return parse_duration(raw)
    except InvalidDuration:
        raise InvalidDuration(str(raw), field="expiring_within") from None


# ``?expiring_within=30d``: what expires between now and then (a bad duration is 400 invalid_duration).
ExpiringWithin = Annotated[timedelta, BeforeValidator(_within)]


_DEFAULTS: dict[type[QueryModel], QueryModel] = {}


def parse_query(model: type[Q], request: web.Request) -> Q:
    if not request.query:  # the common case on the hot read path: the model's defaults, built once (it is frozen)
        default = _DEFAULTS.get(model)
        if default is None:
            default = _DEFAULTS[model] = model.model_validate({})
        return cast(Q, default)
    values = {name: request.query.getone(name) for name in request.query}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        name = str(error["loc"][0]) if error["loc"] else "query"
        alias = model.model_fields[name].alias if name in model.model_fields else None
        parameter = alias or name
        reason = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "literal_error":
            reason = "must be " + reason.removeprefix("Input should be ")
        field = model.model_fields.get(name)
        if field is not None and field.annotation in (int, int | None):
            low, high = _bounds(field)
            reason = f"must be a whole number from {low} to {high}"
        raise InvalidRequest(f"'{parameter}' {reason}", parameter=parameter) from None


def _bounds(field: FieldInfo) -> tuple[int, int]:
    lows = (m.ge for m in field.metadata if isinstance(m, annotated_types.Ge) and isinstance(m.ge, int))
    highs = (m.le for m in field.metadata if isinstance(m, annotated_types.Le) and isinstance(m.le, int))
    return next(lows, 0), next(highs, MAX_INT32)
