"""The export worker: runs each pending export as a background job.

- It polls for unfinished exports every second (and at once when this process accepts one), so jobs survive a
  restart. Each job runs under a session advisory lock held on the worker's own connection: with several server
  processes only one runs a job, and when that process dies its lock goes with its connection and the job (still
  ``running``) is started again elsewhere, at most ``MAX_ATTEMPTS`` times. A process that loses that connection
  (and so every lock on it) while running jobs cancels them, as if it had died; other failures leave it open.
- State changes are events (``commands/audit_exports.py``), each in its own short transaction; the log is read a
  page per query (``projections/audit/queries.py``); file writes and uploads happen outside any transaction, in
  threads.
- Before reading, the job waits until the audit-log projection has applied every event committed when it started,
  and exports only entries up to the tenant chain's head at that moment: an export is never silently partial.
- Names in the destination were validated by the API and are validated again here (the event store is not an
  input); S3 credentials are read on the requester's behalf (``credentials.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from commands.audit_exports import AuditExportCommands
from projections.audit.projector import AuditLogProjection
from projections.audit.queries import AuditFilter, audit_entries_ascending, chain_head
from projections.audit_exports.queries import open_export_ids
from projections.runner import tracked_position
from scaivault import egress
from scaivault.audit.exports.credentials import RequesterCredentials
from scaivault.audit.exports.destinations import Destination, LocalDestination, open_s3
from scaivault.audit.exports.errors import ExportFailed
from scaivault.audit.exports.formats import CONTENT_TYPES, PartFile, encode, encode_csv
from scaivault.database import connect
from scaivault.domain.audit_exports import (
    AuditExport,
    object_key,
    valid_bucket,
    valid_prefix,
)
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.serialization import format_timestamp

log = logging.getLogger(__name__)

MAX_RECORDS_PER_FILE = 100_000
PAGE_SIZE = 2000
POLL_SECONDS = 1.0
MAX_ATTEMPTS = 3
MAX_CONCURRENT_JOBS = 2
PROJECTION_WAIT_SECONDS = 60.0
# A query on the lock connection unanswered for this long means the connection is lost (its locks may be gone).
LOCK_CONNECTION_TIMEOUT_SECONDS = 5.0
# Failures of the database or its connection: the job is left running and retried (it is not the export's fault).
TRANSIENT = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def job_lock_key(export_id: str) -> int:
    """The advisory lock a process holds while it runs the export's job."""
    digest = hashlib.sha256(f"scaivault:audit-export:{export_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def audit_filter(export: AuditExport) -> AuditFilter:
    return AuditFilter.of(export.filters, since=export.since, until=export.until)


class AuditExportWorker:
    def __init__(
        self,
        *,
        dsn: str,
        pool: asyncpg.Pool,
        store: PostgresEventStore,
        commands: AuditExportCommands,
        credentials: RequesterCredentials,
        export_dir: Path,
        egress_allow: Sequence[egress.IPNetwork] = (),
        on_lock_refused: Callable[[str], None] = lambda export_id: None,
    ) -> None:
        """``on_lock_refused``: told the export's id each time a poll finds the job's lock held by another process
        (and leaves the job to it)."""
        self._dsn = dsn
        self._pool = pool
        self._store = store
        self._commands = commands
        self._credentials = credentials
        self.export_dir = export_dir
        self.egress_allow = tuple(egress_allow)
        self.records_per_file = MAX_RECORDS_PER_FILE
        self.page_size = PAGE_SIZE
        self.poll_seconds = POLL_SECONDS
        self.lock_connection_timeout = LOCK_CONNECTION_TIMEOUT_SECONDS
        self.on_lock_refused = on_lock_refused
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
                except TRANSIENT as exc:  # the lock connection, if it was the one that failed, is dropped already
                    log.warning("audit export poll failed: %s", type(exc).__name__)
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
            async with self._lock_guard:
                if self._lock_conn is not None:
                    await self._drop_lock_connection(self._lock_conn)

    async def _poll_once(self) -> None:
        if self._in_flight:
            await self._check_lock_connection()
        if len(self._in_flight) >= MAX_CONCURRENT_JOBS:
            return
        for export_id in await open_export_ids(self._pool):
            if len(self._in_flight) >= MAX_CONCURRENT_JOBS:
                return
            if export_id in self._in_flight:
                continue
            holder = await self._try_lock(export_id)
            if holder is None:
                self.on_lock_refused(export_id)
                continue
            self._in_flight[export_id] = asyncio.create_task(
                self._job(export_id, holder), name=f"audit-export-{export_id}"
            )

    # -- locks: session-level, on a connection of the worker's own (pooled connections keep no session state) --
    # Every job in flight holds its lock on the current lock connection. When that connection is lost (it failed,
    # or the server ended it), so are all their locks, and another process may start their exports: they are
    # cancelled at once, and retried later as after a crash. Failures elsewhere (the pool) leave it alone.

    async def _try_lock(self, export_id: str) -> asyncpg.Connection | None:
        """Take the export's job lock; return the connection holding it, or None when another process holds it."""
        async with self._lock_guard:
            conn = await self._lock_connection()
            try:
                locked = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1)", job_lock_key(export_id), timeout=self.lock_connection_timeout
                )
            except TRANSIENT:
                await self._drop_lock_connection(conn)
                raise
            return conn if locked else None

    async def _lock_connection(self) -> asyncpg.Connection:
        """The lock connection, opened when there is none (the guard is held)."""
        current = self._lock_conn
        if current is not None and not current.is_closed():
            return current
        if current is not None:  # closed, and its termination callback has not run yet
            await self._drop_lock_connection(current)
        conn = await asyncio.wait_for(connect(self._dsn), self.lock_connection_timeout)
        conn.add_termination_listener(self._lock_connection_ended)
        self._lock_conn = conn
        return conn

    def _holds_lock(self, holder: asyncpg.Connection) -> bool:
        return not holder.is_closed() and holder is self._lock_conn

    async def _unlock(self, export_id: str, holder: asyncpg.Connection) -> None:
        async with self._lock_guard:
            if not self._holds_lock(holder):
                return  # gone with its connection
            try:
                await holder.execute(
                    "SELECT pg_advisory_unlock($1)", job_lock_key(export_id), timeout=self.lock_connection_timeout
                )
            except TRANSIENT:
                await self._drop_lock_connection(holder)

    async def _check_lock_connection(self) -> None:
        """Notice, while jobs rely on it, a lock connection the server has ended without this process hearing of it
        (a failover, a network partition): no answer within ``lock_connection_timeout`` counts as lost."""
        async with self._lock_guard:
            conn = self._lock_conn
            if conn is None:
                return
            try:
                await conn.fetchval("SELECT 1", timeout=self.lock_connection_timeout)
            except TRANSIENT:
                await self._drop_lock_connection(conn)

    def _lock_connection_ended(self, conn: object) -> None:
        """The connection closed (asyncpg's termination listener): the locks it held are released."""
        if conn is self._lock_conn:
            self._lock_conn = None
            self._cancel_jobs_locked_on_lost_connection()

    async def _drop_lock_connection(self, conn: asyncpg.Connection) -> None:
        """Give up the lock connection (it failed, or the worker stops), with every job whose lock it held."""
        if conn is self._lock_conn:
            self._lock_conn = None
            self._cancel_jobs_locked_on_lost_connection()
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)

    def _cancel_jobs_locked_on_lost_connection(self) -> None:
        # A job whose own unlock found the connection broken is ending anyway: it is not cancelled from within.
        stopping = {
            export_id: task for export_id, task in self._in_flight.items()
            if task is not asyncio.current_task() and not task.done()
        }
        for task in stopping.values():
            task.cancel()
        if stopping:
            log.warning(
                "audit export lock connection lost; its jobs stop and will be retried",
                extra={"export_ids": sorted(stopping)},
            )

    # -- one job --

    async def _job(self, export_id: str, holder: asyncpg.Connection) -> None:
        try:
            if not self._holds_lock(holder):
                return  # its lock went with its connection before the job began
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
        # The job's own bookkeeping failed (database gone): the next poll retries.
        except Exception as exc:  # noqa: BLE001
            log.warning("audit export bookkeeping failed", extra={"export_id": export_id, "error": type(exc).__name__})
        finally:
            try:
                await self._unlock(export_id, holder)
            finally:  # only now: until its lock is released, no poll of this process may take the job again
                self._in_flight.pop(export_id, None)
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
                await destination.put(part, CONTENT_TYPES["json"])
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
        entries = audit_filter(export)
        files: list[dict[str, Any]] = []
        part: PartFile | None = None
        after = 0
        try:
            while True:
                rows = await audit_entries_ascending(
                    self._pool, export.tenant_id, entries, after_seq=after, through_seq=through_seq,
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
                    await part.write(encode(take, export.format), len(take))
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
        return await open_s3(await self._credentials.s3(export), bucket, self.egress_allow)
