"""Reading a Kinesis stream's shards locally, as Lambda's event source mapping does: each shard
from where its last checkpoint ends (else from the stream's start, TRIM_HORIZON), in order, and
from the checkpoint again after `rewind` (records not committed are read again). The emulated
mapping (esm.py) and the in-process poller (poller.py) both read through it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Checkpoint = Callable[[str], Awaitable[str | None]]
"""The sequence number a shard was read up to (inclusive), or None to start at the beginning."""


async def _no_checkpoint(shard: str) -> str | None:
    return None


class ShardReader:
    def __init__(self, kinesis: Any, stream_name: str, checkpoint: Checkpoint = _no_checkpoint) -> None:
        self.kinesis = kinesis
        self.stream_name = stream_name
        self.checkpoint = checkpoint
        self._iterators: dict[str, str | None] = {}

    async def shards(self) -> list[str]:
        response = await self.kinesis.list_shards(StreamName=self.stream_name)
        return [shard["ShardId"] for shard in response["Shards"]]

    async def read(self, shard: str, limit: int) -> tuple[list[dict[str, Any]], int] | None:
        """The next records of `shard` (at most `limit`) and how far behind the tip they are
        (MillisBehindLatest); None once a closed shard is read to its end."""
        if shard not in self._iterators:
            after = await self.checkpoint(shard)
            start = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": after} if after
                     else {"ShardIteratorType": "TRIM_HORIZON"})
            self._iterators[shard] = (await self.kinesis.get_shard_iterator(
                StreamName=self.stream_name, ShardId=shard, **start))["ShardIterator"]
        iterator = self._iterators[shard]
        if iterator is None:
            return None
        response = await self.kinesis.get_records(ShardIterator=iterator, Limit=limit)
        self._iterators[shard] = response.get("NextShardIterator")
        return list(response["Records"]), int(response.get("MillisBehindLatest", 0))

    def rewind(self, shard: str) -> None:
        """Read `shard` again from its checkpoint."""
        self._iterators.pop(shard, None)
