"""Token buckets in Redis, shared by every server using the same Redis and key prefix.

One charge (one or several buckets, all-or-nothing) is one round trip: a Lua script run by EVALSHA (redis-py's
registered script loads it on a NOSCRIPT reply). The script reads Redis's own clock, so servers whose clocks differ
still agree on refills. A bucket's key expires when it would be full again: an idle identity costs no memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError

from scaivault.ratelimit.buckets import Charge, Outcome
from scaivault.tasks import cancel_and_wait

# KEYS[i]: a bucket; ARGV[4i-3..4i]: its rate (tokens/s), capacity, cost, need. Reply: {allowed, level_1, ...},
# levels as strings (a Lua number would come back truncated to an integer).
TAKE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local levels, allowed = {}, 1
for i = 1, #KEYS do
  local rate, capacity, need = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2]), tonumber(ARGV[4*i])
  local state = redis.call('HMGET', KEYS[i], 'level', 'at')
  local level = capacity
  if state[1] then
    level = math.min(capacity, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
  end
  levels[i] = level
  if level < need then allowed = 0 end
end
if allowed == 1 then
  for i = 1, #KEYS do
    local rate, capacity, cost = tonumber(ARGV[4*i-3]), tonumber(ARGV[4*i-2]), tonumber(ARGV[4*i-1])
    if cost > 0 then
      levels[i] = levels[i] - cost
      redis.call('HSET', KEYS[i], 'level', string.format('%.17g', levels[i]), 'at', string.format('%.17g', now))
      redis.call('PEXPIRE', KEYS[i], math.ceil((capacity - levels[i]) / rate * 1000) + 1000)
    end
  end
end
local reply = {allowed}
for i = 1, #KEYS do reply[i + 1] = string.format('%.17g', levels[i]) end
return reply
"""


class RedisBuckets:
    """Charges made in the same turn of the event loop (concurrent requests) go out together in one pipeline: each
    is still one EVALSHA and one round trip for its request, but a busy server pays one socket write and one wake-up
    for many of them instead of one each (docs/rate-limiting.md, Cost)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._script = client.register_script(TAKE_SCRIPT)
        self._queued: list[tuple[list[str], list[str], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def take(self, charges: Sequence[Charge]) -> list[Outcome]:
        args: list[float] = []
        for charge in charges:
            args += (charge.limit.rate, charge.limit.capacity, charge.cost, charge.need)
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        self._queued.append(([charge.key for charge in charges], [repr(arg) for arg in args], reply))
        if len(self._queued) == 1:
            loop.call_soon(self._send_queued)
        result = await reply
        allowed = int(result[0]) == 1
        return [Outcome(charge, float(level), allowed) for charge, level in zip(charges, result[1:], strict=True)]

    def _send_queued(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.create_task(self._send(batch), name="rate-limit-redis")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[list[str], list[str], asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                keys, args, _ = batch[0]
                replies: list[Any] = [await self._script(keys=keys, args=args)]
            else:
                replies = await self._pipelined([(keys, args) for keys, args, _ in batch])
        except asyncio.CancelledError:
            for _, _, reply in batch:
                reply.cancel()
            raise
        except BaseException as exc:  # noqa: BLE001 - every waiting request sees the failure (and falls back)
            replies = [exc] * len(batch)
        for (_, _, reply), result in zip(batch, replies, strict=True):
            if reply.done():  # its request was cancelled meanwhile
                continue
            if isinstance(result, BaseException):
                reply.set_exception(result)
            else:
                reply.set_result(result)

    async def _pipelined(self, calls: list[tuple[list[str], list[str]]]) -> list[Any]:
        replies = await self._evalsha_all(calls)
        if any(isinstance(reply, NoScriptError) for reply in replies):  # Redis restarted or flushed its scripts
            await self._client.script_load(TAKE_SCRIPT)
            replies = await self._evalsha_all(calls)
        return replies

    async def _evalsha_all(self, calls: list[tuple[list[str], list[str]]]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(self._script.sha, len(keys), *keys, *args)
        return await pipe.execute(raise_on_error=False)

    async def close(self) -> None:
        await cancel_and_wait(list(self._sending))
