"""Waiting for resources to be ready. Creating a table, its indexes or a stream is asynchronous
on AWS and in realistic emulators (seconds to minutes: CREATING, then ACTIVE); a call made
before then meets ResourceNotFoundException or ResourceInUseException. Provisioning waits for
each to be ACTIVE, polling with growing pauses up to a deadline, and past it says in one line
what is not ready."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tq_cloud.backends.aws.dynamo import error_code
from tq_cloud.errors import ConfigurationError

log = logging.getLogger("tq_cloud.local")

READY_WITHIN = 120.0


class ResourceNotReadyError(ConfigurationError):
    """A resource still not ACTIVE at the deadline."""


async def until_ready(what: str, status: Callable[[], Awaitable[str | None]], within: float = READY_WITHIN) -> None:
    """Poll `status` (None while the resource is not visible yet) until it says ACTIVE."""
    deadline, pause, last = time.monotonic() + within, 0.05, None
    while True:
        try:
            last = await status()
        except Exception as exc:
            if error_code(exc) not in ("ResourceNotFoundException", "ResourceInUseException"):
                raise
            last = None
        if last == "ACTIVE":
            return
        if time.monotonic() + pause > deadline:
            raise ResourceNotReadyError(f"{what} is {last or 'not visible'} after {within:.0f} s: the endpoint "
                                        "is still creating it; try again, or check the endpoint's logs")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


async def table_ready(dynamodb: Any, table: str, within: float = READY_WITHIN) -> None:
    """The table and each of its global secondary indexes ACTIVE."""
    async def status() -> str | None:
        described = (await dynamodb.describe_table(TableName=table))["Table"]
        states = [described.get("TableStatus")] + [i.get("IndexStatus") for i in
                                                  described.get("GlobalSecondaryIndexes", [])]
        return "ACTIVE" if all(s == "ACTIVE" for s in states) else next(s for s in states if s != "ACTIVE")

    await until_ready(f"table {table}", status, within)


async def stream_ready(kinesis: Any, stream: str, within: float = READY_WITHIN) -> None:
    async def status() -> str | None:
        summary = (await kinesis.describe_stream_summary(StreamName=stream))["StreamDescriptionSummary"]
        state: str | None = summary.get("StreamStatus")
        return state

    await until_ready(f"stream {stream}", status, within)


async def enable_ttl(dynamodb: Any, table: str, attribute: str) -> None:
    """TTL on `attribute`. An endpoint without the API (dynalite) is told about in the log and
    passed: the gap is the emulator's, and nothing expires there anyway."""
    try:
        await dynamodb.update_time_to_live(TableName=table, TimeToLiveSpecification={
            "Enabled": True, "AttributeName": attribute})
    except Exception as exc:
        if error_code(exc) not in ("UnknownOperationException", "UnrecognizedClientException") and \
                "UpdateTimeToLive" not in str(exc):
            raise
        log.warning("the endpoint has no UpdateTimeToLive: table %s keeps its rows (%s)", table, error_code(exc))
