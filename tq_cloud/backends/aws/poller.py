"""A local stand-in for the Lambda event source mapping: polls each shard with GetRecords,
hands batches to the handler, and checkpoints like Lambda with ReportBatchItemFailures: after
a batch, reading resumes after the last record before the first one not committed, so
uncommitted records are read again."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tq_cloud.backends.aws.kinesis import decode_get_records
from tq_cloud.core.codec import UndecodableRecord
from tq_cloud.core.handler import TaskHandler
from tq_cloud.core.models import Task

log = logging.getLogger("tq_cloud.kinesis.poller")


class KinesisShardPoller:
    def __init__(self, client: Any, stream_name: str, handler: TaskHandler, *, batch_size: int = 100,
                 initial_position: str = "TRIM_HORIZON") -> None:
        self.client = client
        self.stream_name = stream_name
        self.handler = handler
        self.batch_size = batch_size
        self.initial_position = initial_position
        self.checkpoints: dict[str, str] = {}
        self.committed = 0
        self.redelivered = 0
        self._iterators: dict[str, str | None] = {}

    async def _shards(self) -> list[str]:
        response = await self.client.list_shards(StreamName=self.stream_name)
        return [shard["ShardId"] for shard in response["Shards"]]

    async def _iterator(self, shard: str) -> str | None:
        if shard not in self._iterators:
            checkpoint = self.checkpoints.get(shard)
            args: dict[str, Any] = {"StreamName": self.stream_name, "ShardId": shard}
            if checkpoint:
                args.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=checkpoint)
            else:
                args.update(ShardIteratorType=self.initial_position)
            self._iterators[shard] = (await self.client.get_shard_iterator(**args))["ShardIterator"]
        return self._iterators[shard]

    async def poll_shard(self, shard: str) -> int:
        """Read and process one batch from a shard; return the records read (uncommitted ones
        are read again by the next poll)."""
        iterator = await self._iterator(shard)
        if iterator is None:
            return 0
        response = await self.client.get_records(ShardIterator=iterator, Limit=self.batch_size)
        records = decode_get_records(response["Records"])
        self._iterators[shard] = response.get("NextShardIterator")
        if not records:
            return 0
        report = await self.handler.process_records([r for _, r in records], f"kinesis:{shard}")
        failed_ids = {t.key for t in report.not_committed} | {u.record_id for u in report.unrecorded}
        first_failed = next((i for i, (seq, rec) in enumerate(records) if _record_key(seq, rec) in failed_ids),
                            None)
        committed = records if first_failed is None else records[:first_failed]
        if committed:
            self.checkpoints[shard] = committed[-1][0]
        self.committed += len(committed)
        if first_failed is not None:
            self.redelivered += len(records) - len(committed)
            self._iterators.pop(shard, None)  # re-read from the first uncommitted record
        return len(records)

    async def poll_once(self) -> int:
        return sum([await self.poll_shard(shard) for shard in await self._shards()])

    async def run(self, stop: asyncio.Event, idle_delay: float = 0.2) -> None:
        while not stop.is_set():
            if not await self.poll_once():
                try:
                    await asyncio.wait_for(stop.wait(), idle_delay)
                except TimeoutError:
                    pass


def _record_key(sequence: str, record: Task | UndecodableRecord) -> str:
    return record.record_id if isinstance(record, UndecodableRecord) else (record.id or sequence)
