"""Consumes the stream in this process with a TaskHandler, the way the Lambda event source
mapping does with ReportBatchItemFailures: after a batch, reading resumes after the last record
before the first one named not committed, so uncommitted records are read again (a batch
holding an aggregated record puts its uncommitted tasks back instead: remainders.py). For tests and
benchmarks that drive the engine on the AWS backends without Lambda-shaped events (esm.py is the
emulated mapping that invokes the worker handler)."""

from __future__ import annotations

import asyncio
from typing import Any

from tq_cloud.assembly.handler import TaskHandler
from tq_cloud.aws_lambda.remainders import uncommitted_records
from tq_cloud.backends.aws.kinesis import decode_get_records
from tq_cloud.local.shards import ShardReader


class KinesisShardPoller:
    def __init__(self, client: Any, stream_name: str, handler: TaskHandler, *, batch_size: int = 100) -> None:
        self.handler = handler
        self.batch_size = batch_size
        self.checkpoints: dict[str, str] = {}
        self.committed = 0
        self.redelivered = 0
        self.requeued = 0
        """Uncommitted tasks of aggregated batches put back on the stream (remainders.py)."""
        self.reader = ShardReader(client, stream_name, self._checkpoint)

    async def _checkpoint(self, shard: str) -> str | None:
        return self.checkpoints.get(shard)

    async def poll_shard(self, shard: str) -> int:
        """Read and process one batch from a shard; return the records read (uncommitted ones
        are read again by the next poll)."""
        read = await self.reader.read(shard, self.batch_size)
        if not read or not read[0]:
            return 0
        records = decode_get_records(read[0])
        report = await self.handler.process_records([r for _, r in records], f"kinesis:{shard}")
        uncommitted = {t.key for t in report.not_committed} | {u.record_id for u in report.unrecorded}
        remainders = await uncommitted_records(self.handler, records, uncommitted)
        self.requeued += remainders.requeued
        named = set(remainders.named)
        first_failed = next((i for i, (seq, _) in enumerate(records) if seq in named), None)
        committed = records if first_failed is None else records[:first_failed]
        if committed:
            self.checkpoints[shard] = committed[-1][0]
        self.committed += len(committed)
        if first_failed is not None:
            self.redelivered += len(records) - len(committed)
            self.reader.rewind(shard)  # re-read from the first uncommitted record
        return len(records)

    async def poll_once(self) -> int:
        return sum([await self.poll_shard(shard) for shard in await self.reader.shards()])

    async def run(self, stop: asyncio.Event, idle_delay: float = 0.2) -> None:
        while not stop.is_set():
            if not await self.poll_once():
                try:
                    await asyncio.wait_for(stop.wait(), idle_delay)
                except TimeoutError:
                    pass

