"""Running audit exports in the background: read the tenant's audit log in pages, write JSONL or CSV part files of at
most ``records_per_file`` records, and put them (and a manifest.json) on the destination.

- The worker polls for unfinished exports every second (and at once when this process accepts one), so jobs survive
  a restart. Each job runs under a session advisory lock held on the worker's own connection: with several server
  processes only one runs a job, and when that process dies its lock goes with its connection and the job (still
  ``running``) is started again elsewhere, at most ``MAX_ATTEMPTS`` times.
- State changes are events (commands/audit_exports.py), each in its own short transaction; reading the log is one
  query per page; file writes and uploads happen outside any transaction, in threads.
- Before reading, the job waits until the audit-log projection has applied every event committed when it started,
  and exports only entries up to the tenant chain's head at that moment: an export is never silently partial.
- Destinations come from the API only as validated names: a local export is written under
  ``SCAIVAULT_EXPORT_DIR/<tenant_id>/<prefix>/<export_id>/`` (checked again after resolving symlinks); an S3
  endpoint passes the egress guard, and the client is forced to path-style addressing so it connects to the host
  that was checked.
- Error messages recorded on a failed export name what went wrong, never a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import logging
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from commands.audit_exports import AuditExportCommands
from projections.audit.projector import AuditLogProjection
from projections.audit.queries import AuditFilter, audit_entries_ascending, chain_head
from projections.audit_exports import open_export_ids
from projections.runner import tracked_position
from projections.secrets.queries import secret_value_row
from scaivault import egress
from scaivault.audit.access_records import AccessRecord, AccessRecorder
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.secret_values import open_value
from scaivault.database import connect
from scaivault.domain.audit_exports import AuditExport
from scaivault.domain.errors import ScaiVaultError
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.http.audit import _entry as log_entry  # the audit log API's entry: exports carry the same fields
from scaivault.http.middleware import new_request_id
from scaivault.http.responses import dumps, format_timestamp

log = logging.getLogger(__name__)

MAX_RECORDS_PER_FILE = 100_000
PAGE_SIZE = 2000
POLL_SECONDS = 1.0
MAX_ATTEMPTS = 3
MAX_CONCURRENT_JOBS = 2
PROJECTION_WAIT_SECONDS = 60.0
JOB_IDENTITY = "system:audit-export"

# Validated again here (defence in depth): the API accepted only these, and the event store is not an input.
PREFIX_PATTERN = re.compile(r"[a-z0-9_-]+(/[a-z0-9_-]+)*")
MAX_PREFIX_LENGTH = 256
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
REGION_PATTERN = re.compile(r"[a-z0-9-]{1,32}")
CSV_FIELDS = (
    "id", "sequence", "timestamp", "action", "identity_type", "identity_id", "secret_path", "source_ip", "user_agent",
    "success", "status", "error_code", "duration_ms", "request_id", "method", "route", "extra_data", "hash",
)
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv"}
# Failures of the database or its connection: the job is left running and retried (it is not the export's fault).
TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class ExportFailed(Exception):
    """The export cannot complete; ``str()`` is recorded on the export, so it must never hold a credential."""


def valid_prefix(prefix: str) -> bool:
    return prefix == "" or (len(prefix) <= MAX_PREFIX_LENGTH and PREFIX_PATTERN.fullmatch(prefix) is not None)


def valid_bucket(bucket: str) -> bool:
    return BUCKET_PATTERN.fullmatch(bucket) is not None and ".." not in bucket


def object_key(prefix: str, export_id: str, name: str) -> str:
    return f"{prefix}/{export_id}/{name}" if prefix else f"{export_id}/{name}"


def audit_filter(export: AuditExport) -> AuditFilter:
    return AuditFilter.of(export.filters, since=export.since, until=export.until)


# ---- formats ------------------------------------------------------------------------------------------------------


def encode_jsonl(rows: Sequence[Any]) -> bytes:
    return b"".join(dumps(log_entry(row)) + b"\n" for row in rows)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value


def encode_csv(rows: Sequence[Any], *, header: bool) -> bytes:
    """RFC 4180 (CRLF line ends, quoting as needed), UTF-8. Values are exact: no spreadsheet-formula escaping."""
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_FIELDS)
    for row in rows:
        entry = log_entry(row)
        writer.writerow([_csv_value(entry[name]) for name in CSV_FIELDS])
    return out.getvalue().encode()


# ---- part files and destinations -----------------------------------------------------------------------------------


class PartFile:
    """A part being written to a scratch file; its size and SHA-256 are computed as it is written."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.records = 0
        self.bytes = 0
        self._hash = hashlib.sha256()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._file = os.fdopen(fd, "wb")

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)

    async def write(self, data: bytes, records: int) -> None:
        await asyncio.to_thread(self._write, data)
        self.records += records
        self.bytes += len(data)

    async def close(self) -> dict[str, Any]:
        await asyncio.to_thread(self._file.close)
        return {"key": self.key, "records": self.records, "bytes": self.bytes, "sha256": self._hash.hexdigest()}

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self.path.unlink()


class Destination(ABC):
    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch

    @abstractmethod
    async def put(self, part: PartFile, content_type: str) -> None:
        """Store the closed part under its key (the scratch file is consumed)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LocalDestination(Destination):
    """``<export dir>/<tenant_id>/<prefix>/<export_id>/``: every name in it was validated, and the folder is checked
    to be inside the export directory after resolving symlinks, before and after creating it."""

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


class S3Destination(Destination):
    def __init__(self, client: Any, bucket: str, secrets: Sequence[str]) -> None:
        self._scratch_dir = tempfile.TemporaryDirectory(prefix="scaivault-export-")
        super().__init__(Path(self._scratch_dir.name))
        self._client = client
        self._bucket = bucket
        self._secrets = secrets

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
            raise ExportFailed(s3_error_message(exc, self._bucket, self._secrets)) from None
        finally:
            part.discard()

    async def close(self) -> None:
        await asyncio.to_thread(self._scratch_dir.cleanup)


def scrub(message: str, secrets: Sequence[str]) -> str:
    for value in secrets:
        if value:
            message = message.replace(value, "[redacted]")
    return message


def s3_error_message(exc: BaseException, bucket: str, secrets: Sequence[str]) -> str:
    """What the S3 store said, by error code only (an SDK message may quote request details)."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    cause = exc
    if type(exc).__name__ == "S3UploadFailedError":  # s3transfer wraps the ClientError; its text names the code
        match = re.search(r"\(([A-Za-z0-9]+)\)", str(exc))
        code = match.group(1) if match else "UploadFailed"
        return scrub(f"The S3 store refused the upload to bucket {bucket}: {code}", secrets)
    if isinstance(cause, ClientError):
        code = str(cause.response.get("Error", {}).get("Code", "Unknown"))[:64]
        return scrub(f"The S3 store refused the upload to bucket {bucket}: {code}", secrets)
    if isinstance(cause, EndpointConnectionError):
        return "Could not connect to the S3 endpoint"
    if isinstance(cause, BotoCoreError):
        return f"The S3 upload failed: {type(cause).__name__}"
    return f"The S3 upload failed: {type(cause).__name__}"


# ---- the worker ---------------------------------------------------------------------------------------------------


def _lock_key(export_id: str) -> int:
    digest = hashlib.sha256(f"scaivault:audit-export:{export_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AuditExportWorker:
    def __init__(
        self,
        *,
        dsn: str,
        pool: asyncpg.Pool,
        store: PostgresEventStore,
        commands: AuditExportCommands,
        keyring: KeyRing,
        access_recorder: AccessRecorder,
        export_dir: Path,
        egress_allow: Sequence[egress.IPNetwork] = (),
        s3_client_factory: Callable[..., Any] | None = None,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._store = store
        self._commands = commands
        self._keyring = keyring
        self._access_recorder = access_recorder
        self.export_dir = export_dir
        self.egress_allow = tuple(egress_allow)
        self._s3_client_factory = s3_client_factory or make_s3_client
        self.records_per_file = MAX_RECORDS_PER_FILE
        self.page_size = PAGE_SIZE
        self.poll_seconds = POLL_SECONDS
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._lock_conn: asyncpg.Connection | None = None
        self._lock_guard = asyncio.Lock()

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Poll for unfinished exports for ever (from start-up on), running each under its lock."""
        try:
            while True:
                try:
                    await self._poll_once()
                except TRANSIENT as exc:
                    log.warning("audit export poll failed: %s", type(exc).__name__)
                    await self._drop_lock_connection()
                except Exception:  # a bug must not stop every later export
                    log.exception("audit export poll crashed")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_seconds)
                self._wakeup.clear()
        finally:
            for task in self._in_flight.values():
                task.cancel()
            for task in list(self._in_flight.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._drop_lock_connection()

    async def _poll_once(self) -> None:
        if len(self._in_flight) >= MAX_CONCURRENT_JOBS:
            return
        for export_id in await open_export_ids(self._pool):
            if len(self._in_flight) >= MAX_CONCURRENT_JOBS:
                return
            if export_id in self._in_flight or not await self._try_lock(export_id):
                continue
            self._in_flight[export_id] = asyncio.create_task(self._job(export_id), name=f"audit-export-{export_id}")

    # -- locks: session-level, on a connection of the worker's own (pooled connections keep no session state) --

    async def _try_lock(self, export_id: str) -> bool:
        async with self._lock_guard:
            if self._lock_conn is None or self._lock_conn.is_closed():
                self._lock_conn = await connect(self._dsn)
            return bool(await self._lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(export_id)))

    async def _unlock(self, export_id: str) -> None:
        async with self._lock_guard:
            if self._lock_conn is not None and not self._lock_conn.is_closed():
                try:
                    await self._lock_conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(export_id))
                except TRANSIENT:
                    await self._close_lock_connection()

    async def _drop_lock_connection(self) -> None:
        async with self._lock_guard:
            await self._close_lock_connection()

    async def _close_lock_connection(self) -> None:
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close(timeout=2)
            self._lock_conn = None

    # -- one job --

    async def _job(self, export_id: str) -> None:
        try:
            export = await self._commands.start(export_id)
            if export is None:
                return
            if export.attempts > MAX_ATTEMPTS:
                await self._commands.fail(export_id, f"Gave up after {MAX_ATTEMPTS} interrupted attempts")
                return
            try:
                manifest = await self.produce(export)
            except ExportFailed as exc:
                log.info("audit export failed", extra={"export_id": export_id, "error": str(exc)})
                await self._commands.fail(export_id, str(exc))
                return
            except asyncio.CancelledError:
                raise
            except TRANSIENT as exc:  # left running: the next poll starts it again (counting the attempt)
                log.warning("audit export interrupted", extra={"export_id": export_id, "error": type(exc).__name__})
                return
            except Exception:
                log.exception("audit export crashed", extra={"export_id": export_id})
                await self._commands.fail(export_id, "The export failed on an internal error (see the server log)")
                return
            await self._commands.complete(export_id, manifest)
            log.info("audit export completed", extra={"export_id": export_id, "records": manifest["total_records"]})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job's own bookkeeping failed (database gone): the next poll retries
            log.warning("audit export bookkeeping failed", extra={"export_id": export_id, "error": type(exc).__name__})
        finally:
            self._in_flight.pop(export_id, None)
            await self._unlock(export_id)
            self._wakeup.set()  # look for the next job

    async def produce(self, export: AuditExport) -> dict[str, Any]:
        """Write every matching entry to the destination; return the manifest."""
        destination = await self._open_destination(export)
        try:
            through_seq = await self._settled_head(export.tenant_id)
            files = await self._write_parts(export, destination, through_seq)
            prefix = export.destination.get("prefix", "")
            manifest = {
                "export_id": export.export_id,
                "format": export.format,
                "from": format_timestamp(export.since),
                "to": format_timestamp(export.until),
                "filters": export.filters,
                "total_records": sum(f["records"] for f in files),
                "total_bytes": sum(f["bytes"] for f in files),
                "files": files,
                "last_sequence": through_seq,
                "manifest_key": object_key(prefix, export.export_id, "manifest.json"),
            }
            part = PartFile(destination.scratch / ".manifest.json.tmp", manifest["manifest_key"])
            try:
                await part.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n", 0)
                await part.close()
                await destination.put(part, "application/json")
            except BaseException:
                part.discard()
                raise
            return manifest
        finally:
            await destination.close()

    async def _write_parts(
        self, export: AuditExport, destination: Destination, through_seq: int
    ) -> list[dict[str, Any]]:
        prefix = export.destination.get("prefix", "")
        audit_filter_ = audit_filter(export)
        files: list[dict[str, Any]] = []
        part: PartFile | None = None
        after = 0
        try:
            while True:
                rows = await audit_entries_ascending(
                    self._pool, export.tenant_id, audit_filter_, after_seq=after, through_seq=through_seq,
                    limit=self.page_size,
                )
                pending = list(rows)
                while pending:
                    if part is None:
                        name = f"part-{len(files) + 1:05d}.{export.format}"
                        key = object_key(prefix, export.export_id, name)
                        part = PartFile(destination.scratch / f".{name}.tmp", key)
                        if export.format == "csv":
                            await part.write(encode_csv([], header=True), 0)
                    room = self.records_per_file - part.records
                    take, pending = pending[:room], pending[room:]
                    data = encode_jsonl(take) if export.format == "jsonl" else encode_csv(take, header=False)
                    await part.write(data, len(take))
                    if part.records >= self.records_per_file:
                        files.append(await self._finish(part, destination, export.format))
                        part = None
                if len(rows) < self.page_size:
                    break
                after = rows[-1]["seq"]
            if part is not None:
                files.append(await self._finish(part, destination, export.format))
                part = None
        finally:
            if part is not None:
                part.discard()
        return files

    @staticmethod
    async def _finish(part: PartFile, destination: Destination, fmt: str) -> dict[str, Any]:
        described = await part.close()
        await destination.put(part, CONTENT_TYPES[fmt])
        return described

    async def _settled_head(self, tenant_id: str) -> int:
        """Wait until the audit log holds every event committed before now; return the tenant chain's head."""
        head = await self._store.max_notification_id(self._pool)
        deadline = asyncio.get_running_loop().time() + PROJECTION_WAIT_SECONDS
        while await tracked_position(self._pool, AuditLogProjection.name) < head:
            if asyncio.get_running_loop().time() > deadline:
                raise ExportFailed("The audit log projection is behind the event store; retry the export later")
            await asyncio.sleep(0.05)
        seq, _ = await chain_head(self._pool, tenant_id)
        return seq

    # -- destinations --

    async def _open_destination(self, export: AuditExport) -> Destination:
        config = export.destination
        prefix = config.get("prefix", "")
        if not isinstance(prefix, str) or not valid_prefix(prefix):
            raise ExportFailed("The destination prefix is not valid")
        if config["type"] == "local":
            return await asyncio.to_thread(
                LocalDestination, self.export_dir, export.tenant_id, prefix, export.export_id
            )
        bucket = config.get("bucket", "")
        if not isinstance(bucket, str) or not valid_bucket(bucket):
            raise ExportFailed("The destination bucket name is not valid")
        credentials = await self._credentials(export, config["credentials_path"])
        secret_names = ("access_key_id", "secret_access_key", "session_token")
        secrets = [credentials[name] for name in secret_names if name in credentials]
        endpoint = credentials.get("endpoint_url")
        if endpoint:
            try:
                await egress.check_url(endpoint, self.egress_allow)
            except egress.EgressRefused as exc:
                raise ExportFailed(scrub(f"The S3 endpoint was refused: {exc}", secrets)) from None
        try:
            client = await asyncio.to_thread(self._s3_client_factory, credentials)
        except Exception as exc:  # noqa: BLE001
            raise ExportFailed(scrub(f"Could not set up the S3 client: {type(exc).__name__}", secrets)) from None
        return S3Destination(client, bucket, secrets)

    async def _credentials(self, export: AuditExport, path: str) -> dict[str, str]:
        """The S3 credentials from the tenant's secret at ``path``. The read is recorded in the audit log (identity
        ``system:audit-export``, with the export id and who requested it) before the value is used."""
        row = await secret_value_row(self._pool, export.tenant_id, path, None)
        if row is None or row["deleted_at"] is not None or row["ciphertext"] is None or row["wrapped_data_key"] is None:
            raise ExportFailed(f"No readable secret at credentials_path {path}")
        try:
            key = await self._keyring.unwrap_data_key(
                export.tenant_id, row["data_key_id"], row["wrapped_data_key"], conn=self._pool
            )
            data = open_value(key, row["ciphertext"], owner=export.tenant_id, path=path, version=row["version"])
        except ScaiVaultError:
            raise ExportFailed(f"The secret at credentials_path {path} could not be opened") from None
        record = AccessRecord(
            recorded_at=datetime.now(timezone.utc),
            request_id=new_request_id(),
            method="JOB",
            route="audit-export",
            action="read",
            partner_id=export.partner_id,
            tenant_id=export.tenant_id,
            identity_id=JOB_IDENTITY,
            secret_path=path,
            status=200,
            extra={"export_id": export.export_id, "requested_by": export.created_by, "version": row["version"]},
            accessed_streams=[row["stream_id"]],
        )
        try:
            await self._access_recorder.record(record)
        except ScaiVaultError:
            raise ExportFailed("The credentials read could not be recorded in the audit log; retry later") from None
        names = ("access_key_id", "secret_access_key", "region", "endpoint_url", "session_token")
        for required in ("access_key_id", "secret_access_key"):
            if not isinstance(data.get(required), str) or not data[required]:
                raise ExportFailed(f"The secret at credentials_path {path} has no {required}")
        for optional in names[2:]:
            if data.get(optional) is not None and not isinstance(data[optional], str):
                raise ExportFailed(f"The secret at credentials_path {path}: {optional} must be a string")
        region = data.get("region") or "us-east-1"
        if not REGION_PATTERN.fullmatch(region):
            raise ExportFailed(f"The secret at credentials_path {path}: region is not valid")
        return {name: data[name] for name in names if data.get(name)} | {"region": region}


def make_s3_client(credentials: dict[str, str]) -> Any:
    """A boto3 S3 client from explicit credentials only. With an endpoint (S3-compatible stores), path-style
    addressing: the client connects to exactly the host the egress guard checked, never ``<bucket>.<host>``."""
    import boto3
    from botocore.config import Config

    endpoint = credentials.get("endpoint_url")
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else {},
        ignore_configured_endpoint_urls=True,
    )
    session = boto3.session.Session(
        aws_access_key_id=credentials["access_key_id"],
        aws_secret_access_key=credentials["secret_access_key"],
        aws_session_token=credentials.get("session_token"),
        region_name=credentials["region"],
    )
    return session.client("s3", endpoint_url=endpoint, config=config)
