"""Request bodies. Unknown fields are rejected (422): a secret store must not silently ignore an option the
caller believes applies, such as a misspelt ``cas``."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scaivault.domain.errors import ValidationFailed
from scaivault.domain.secrets import MAX_METADATA_BYTES

MAX_DATA_BYTES = 64 * 1024
ROTATION_POLICY_ID = r"^rot_[A-Za-z0-9_-]{1,64}$"
SECRET_POLICY_ID = r"^sp_[A-Za-z0-9_-]{1,64}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecretMetadataIn(BaseModel):
    """description, tags and owner are typed; any other key is a custom, searchable, non-secret value."""

    model_config = ConfigDict(extra="allow")

    description: str | None = Field(default=None, max_length=1024)
    tags: list[str] | None = Field(default=None, max_length=64)
    owner: str | None = Field(default=None, max_length=256)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str] | None) -> list[str] | None:
        if tags is not None and any(not tag or len(tag) > 128 for tag in tags):
            raise ValueError("each tag is 1-128 characters")
        return tags

    def document(self) -> dict[str, Any]:
        document = self.model_dump(exclude_unset=True)
        check_metadata_document(document)
        return document


def check_metadata_document(document: dict[str, Any]) -> None:
    if len(orjson.dumps(document)) > MAX_METADATA_BYTES:
        raise ValidationFailed(fields=[{"field": "metadata", "message": f"larger than {MAX_METADATA_BYTES} bytes"}])
    if _has_reserved_shape(document):
        raise ValidationFailed(fields=[{"field": "metadata", "message": "an object may not have exactly the keys "
                                        "'_type_' and '_data_' (reserved by the event encoding)"}])


def check_metadata_patch(patch: dict[str, Any] | None) -> None:
    """A PATCH's metadata obeys the same rules as a PUT's, for every key it sets (null removes a key)."""
    if not patch:
        return
    try:
        SecretMetadataIn.model_validate({key: value for key, value in patch.items() if value is not None})
    except ValidationError as exc:
        raise ValidationFailed(fields=_fields(exc, prefix="metadata")) from None
    check_metadata_document(patch)


def _has_reserved_shape(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"_type_", "_data_"} or any(_has_reserved_shape(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_reserved_shape(item) for item in value)
    return False


class WriteOptionsIn(Strict):
    max_versions: int | None = Field(default=None, ge=1, le=1000)
    expires_in: str | None = None
    rotation_policy_id: str | None = Field(default=None, pattern=ROTATION_POLICY_ID)
    cas: int | None = Field(default=None, ge=0)
    secret_policy_id: str | None = Field(default=None, pattern=SECRET_POLICY_ID)


class WriteSecretIn(Strict):
    data: dict[str, Any]
    secret_type: str | None = None
    metadata: SecretMetadataIn | None = None
    options: WriteOptionsIn | None = None

    @field_validator("data")
    @classmethod
    def _size(cls, data: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(data)) > MAX_DATA_BYTES:
            raise ValueError(f"larger than {MAX_DATA_BYTES} bytes")
        return data


class MetadataPatchIn(Strict):
    metadata: dict[str, Any] | None = None
    secret_type: str | None = None
    max_versions: int | None = Field(default=None, ge=1, le=1000)
    expires_in: str | None = None
    expires_at: None = None  # only null is accepted: it clears the expiry
    rotation_policy_id: str | None = Field(default=None, pattern=ROTATION_POLICY_ID)  # null detaches
    secret_policy_id: str | None = Field(default=None, pattern=SECRET_POLICY_ID)  # null unlinks


class BatchOptionsIn(Strict):
    include_metadata: bool = False
    fail_fast: bool = False
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    expand_wildcards: bool = False


class BatchReadIn(Strict):
    paths: list[str] = Field(min_length=1, max_length=100)
    options: BatchOptionsIn = BatchOptionsIn()


class IntrospectIn(Strict):
    token: str = Field(min_length=1, max_length=16384)


def refuse_null(*fields: str, message: str = "may not be null") -> Any:
    """A PATCH body's validator: leaving one of ``fields`` out keeps its value, so an explicit null (which would
    clear it) is refused, 422. In the model: ``_not_null = refuse_null("name", ...)``."""

    def check(value: Any) -> Any:
        if value is None:
            raise ValueError(message)
        return value

    return field_validator(*fields)(check)


def parse_body(model: type[BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ValidationFailed(fields=_fields(exc)) from None


def _fields(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    return [
        {
            "field": ".".join([prefix] * bool(prefix) + [str(part) for part in error["loc"]]) or "body",
            "message": error["msg"],
        }
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
