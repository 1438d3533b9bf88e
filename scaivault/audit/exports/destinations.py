"""Where an export's files go: a folder under the export directory, or an S3 bucket.

- Local: ``<export dir>/<tenant_id>/<prefix>/<export_id>/``; every name in it was validated, and the folder is checked
  to be inside the export directory after resolving symlinks, before and after creating it.
- S3: a client built from explicit credentials only. With an ``endpoint_url`` (S3-compatible stores) the egress guard
  checks its host after DNS, the client uses path-style addressing and sends every request to the checked address
  (``scaivault/egress_botocore.py``: no second DNS lookup, no redirect, no other host). Without one, AWS's own
  endpoint is used.

Messages of failures here are recorded on the export: they name the bucket (the requester's own input) and the S3
error code at most; never the endpoint's host or address, nor a credential.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scaivault import egress
from scaivault.audit.exports.errors import ExportFailed
from scaivault.audit.exports.formats import PartFile

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60
_ERROR_CODE = re.compile(r"[A-Za-z0-9.]{1,64}")


class Destination(ABC):
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    @abstractmethod
    async def put(self, part: PartFile, content_type: str) -> None:
        """Store the closed part under its key (the scratch file is consumed)."""

    async def close(self) -> None:  # noqa: B027 - an optional hook: only destinations holding a client release one
        """Release what the destination holds (nothing, unless it overrides this)."""


class LocalDestination(Destination):
    def __init__(self, export_dir: Path, tenant_id: str, prefix: str, export_id: str) -> None:
        root = export_dir.resolve()
        folder = root.joinpath(tenant_id, *(prefix.split("/") if prefix else []), export_id)
        self._check_inside(root, folder)
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ExportFailed(f"Could not create the export folder: {exc.strerror or type(exc).__name__}") from None
        self._check_inside(root, folder)
        super().__init__(folder)

    @staticmethod
    def _check_inside(root: Path, folder: Path) -> None:
        if not folder.resolve().is_relative_to(root):
            raise ExportFailed("The export folder resolves outside the export directory; nothing was written")

    async def put(self, part: PartFile, content_type: str) -> None:
        final = self.scratch / part.path.name.removeprefix(".").removesuffix(".tmp")
        await asyncio.to_thread(os.replace, part.path, final)


@dataclass(frozen=True)
class S3Credentials:
    """The upload credentials, as read from the secret the export names (``credentials.py``)."""

    access_key_id: str
    secret_access_key: str
    region: str
    endpoint_url: str | None = None
    session_token: str | None = None

    def __repr__(self) -> str:  # never in a log line or traceback
        return f"S3Credentials(region={self.region!r}, endpoint={'set' if self.endpoint_url else 'AWS'})"

    def confidential(self) -> tuple[str, ...]:
        """Values no message may quote: the keys, the token and the endpoint."""
        values = [self.access_key_id, self.secret_access_key, self.session_token, self.endpoint_url]
        if self.endpoint_url:
            values.append(_host_of(self.endpoint_url))
        return tuple(value for value in values if value)


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


class S3Destination(Destination):
    def __init__(self, client: Any, bucket: str, confidential: Sequence[str], closing: Sequence[Any] = ()) -> None:
        self._scratch_dir = tempfile.TemporaryDirectory(prefix="scaivault-export-")
        super().__init__(Path(self._scratch_dir.name))
        self._client = client
        self._bucket = bucket
        self._confidential = confidential
        self._closing = closing

    async def put(self, part: PartFile, content_type: str) -> None:
        try:
            await asyncio.to_thread(
                self._client.upload_file,
                str(part.path),
                self._bucket,
                part.key,
                ExtraArgs={"ContentType": content_type},
            )
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes a safe message
            raise ExportFailed(scrub(s3_error_message(exc, self._bucket), self._confidential)) from None
        finally:
            part.discard()

    async def close(self) -> None:
        for resource in self._closing:
            await asyncio.to_thread(resource.close)
        await asyncio.to_thread(self._scratch_dir.cleanup)


async def open_s3(
    credentials: S3Credentials, bucket: str, egress_allow: Sequence[egress.IPNetwork]
) -> S3Destination:
    """An S3 destination whose client reaches only the checked endpoint (or AWS's own)."""
    confidential = credentials.confidential()
    target = None
    if credentials.endpoint_url:
        try:
            target = await egress.pin_url(credentials.endpoint_url, egress_allow)
        except egress.EgressRefused as exc:
            log.warning("audit export endpoint refused by the egress guard", extra={"reason": str(exc)})
            raise ExportFailed(exc.public_message) from None
    try:
        client, closing = await asyncio.to_thread(s3_client, credentials, target)
    except Exception as exc:  # noqa: BLE001
        raise ExportFailed(scrub(f"Could not set up the S3 client: {type(exc).__name__}", confidential)) from None
    return S3Destination(client, bucket, confidential, closing)


def s3_client(credentials: S3Credentials, target: egress.PinnedTarget | None) -> tuple[Any, list[Any]]:
    """A boto3 S3 client from explicit credentials only (no environment, profile or configured endpoint), and what
    to close with it. With a pinned target: path-style addressing, every request sent to the checked address."""
    import boto3
    from botocore.config import Config

    from scaivault.egress_botocore import pin_client

    config = Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if target is not None else {},
        ignore_configured_endpoint_urls=True,
    )
    session = boto3.session.Session(
        aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key,
        aws_session_token=credentials.session_token,
        region_name=credentials.region,
    )
    client = session.client("s3", endpoint_url=credentials.endpoint_url, config=config)
    if target is None:
        return client, [client]
    return client, [pin_client(client, target), client]


def scrub(message: str, confidential: Sequence[str]) -> str:
    for value in confidential:
        message = message.replace(value, "[redacted]")
    return message


def s3_error_message(exc: BaseException, bucket: str) -> str:
    """What the S3 store said, by error code only (an SDK message may quote the endpoint or request details)."""
    from botocore.exceptions import ClientError, EndpointConnectionError

    for cause in _chain(exc):
        if isinstance(cause, egress.EgressRefused):
            return cause.public_message
        if isinstance(cause, ClientError):
            code = str(cause.response.get("Error", {}).get("Code", ""))
            code = code if _ERROR_CODE.fullmatch(code) else "an unrecognised error"
            return f"The S3 store refused the upload to bucket {bucket}: {code}"
        if isinstance(cause, EndpointConnectionError):
            return "Could not connect to the S3 endpoint"
    return f"The S3 upload failed: {type(exc).__name__}"


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it (s3transfer wraps a ClientError in an S3UploadFailedError)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
