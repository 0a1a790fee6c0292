"""The Redis store's fleet: every sidecar on the server, and change notices.

    mirapi:fleet:{fleet}          hash   ID -> the heartbeat (sidecar.store.fleet.encode)
    mirapi:fleet:{fleet}:until    zset   ID scored by when it stops being listed
    mirapi:changes                pub/sub channel: the kind of record that changed

A put or a list first drops the heartbeats whose time is up (logical
expiry, the injected clock's `now`); both keys also get a server-side
expiry past the latest one, for garbage collection when every sidecar is
gone. A notice is published to the channel; each sidecar's listener is one
extra connection (pub/sub needs its own) that reads it at once.

On a Redis Cluster the channel is a shard channel (SPUBLISH/SSUBSCRIBE):
every sidecar subscribes on the node that owns the channel's slot, where
every notice is published, so each one reaches every sidecar and the count
SPUBLISH answers is all of them (a plain PUBLISH would answer for one node
only). When that node goes, the listener fails, and the fleet's retry
subscribes again on the slot's new owner.
"""

from __future__ import annotations

import contextlib

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from sidecar.store.fleet import Heartbeat, NoticeHandler, decode, encode
from sidecar.store.redis.client import GC_GRACE, RedisBase, as_bytes, millis, text

#: How long one read of the notice channel waits before looking again (it is
#: also how soon a cancelled listener notices).
LISTEN_POLL = 1.0

# KEYS: hash, until. ARGV: now, id, listed until, data, gc ms.
FLEET_PUT = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do redis.call('HDEL', KEYS[1], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[5]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return 1
"""

# KEYS: hash, until. ARGV: now. The heartbeats still listed.
FLEET_LIST = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(expired) do redis.call('HDEL', KEYS[1], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


class RedisFleet(RedisBase):
    def __init__(self) -> None:
        super().__init__()
        self._fleet_put = self._client.register_script(FLEET_PUT)
        self._fleet_list = self._client.register_script(FLEET_LIST)
        fleet = f"{self._prefix}fleet:{{fleet}}"
        self._fleet_keys = [fleet, f"{fleet}:until"]
        self._changes_channel = f"{self._prefix}changes"

    async def fleet_put(self, beat: Heartbeat, keep: float) -> None:
        until = beat.last_seen + keep
        await self._call(
            self._fleet_put(
                keys=self._fleet_keys,
                args=[self._clock.now(), beat.id, until, encode(beat), millis(keep + GC_GRACE)],
            )
        )

    async def fleet_remove(self, sidecar_id: str) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hdel(self._fleet_keys[0], sidecar_id)
        pipe.zrem(self._fleet_keys[1], sidecar_id)
        await self._call(pipe.execute())

    async def fleet_list(self) -> list[Heartbeat]:
        flat = await self._call(self._fleet_list(keys=self._fleet_keys, args=[self._clock.now()]))
        beats: list[Heartbeat] = []
        for i in range(0, len(flat), 2):
            try:
                beats.append(decode(as_bytes(flat[i + 1])))
            except ValueError:
                continue  # not one of ours: a heartbeat of a newer or broken sidecar
        return sorted(beats, key=lambda beat: beat.id)

    async def fleet_notify(self, kind: str) -> int:
        if isinstance(self._client, RedisCluster):
            return int(await self._call(self._client.spublish(self._changes_channel, kind)))
        return int(await self._call(self._client.publish(self._changes_channel, kind)))

    async def fleet_listen(self, handler: NoticeHandler) -> None:
        if isinstance(self._client, RedisCluster):
            await self._listen_sharded(self._client, handler)
            return
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.subscribe(self._changes_channel))
            while True:
                message = await self._call(pubsub.get_message(timeout=LISTEN_POLL))
                if message is not None and message.get("type") == "message":
                    handler(text(message["data"]))
        finally:
            # Closing a connection that is already lost is not an error.
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    async def _listen_sharded(self, client: RedisCluster, handler: NoticeHandler) -> None:
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await self._call(pubsub.ssubscribe(self._changes_channel))
            while True:
                message = await self._call(pubsub.get_sharded_message(timeout=LISTEN_POLL))
                if message is not None and message.get("type") == "smessage":
                    handler(text(message["data"]))
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()
