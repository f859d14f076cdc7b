"""moto's server on 127.0.0.1 (a random port), started once per test session, and fresh,
uniquely named AWS resources per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

from tq_cloud.backends.aws import AwsSettings, open_clients
from tq_cloud.backends.aws.stack import AwsClients
from tq_cloud.local.provision import create_resources


def fresh_settings(endpoint: str, **overrides: object) -> AwsSettings:
    suffix = uuid.uuid4().hex[:10]
    names = {"stream_name": f"s-{suffix}", "tasks_table": f"tasks-{suffix}",
             "barriers_table": f"barriers-{suffix}", "projections_table": f"proj-{suffix}",
             "locks_table": f"locks-{suffix}", "schedule_group": f"g-{suffix}"}
    return AwsSettings(endpoint_url=endpoint, **{**names, **overrides})  # type: ignore[arg-type]


@asynccontextmanager
async def aws_resources(settings: AwsSettings) -> AsyncIterator[AwsClients]:
    async with open_clients(settings) as clients:
        await create_resources(clients, settings)
        yield clients


class PutRecordsFaults:
    """Makes chosen records of PutRecords fail as throttled, without writing them: they are
    removed from the request before it is sent and reported failed in the response."""

    def __init__(self, client: object, fail: Callable[[dict[str, object], int], bool]) -> None:
        self.fail = fail
        self.calls = 0
        self.failed = 0
        self._removed: list[int] = []
        events = client.meta.events  # type: ignore[attr-defined]
        self._send_nothing = False
        events.register("before-parameter-build.kinesis.PutRecords", self._before)
        events.register("before-call.kinesis.PutRecords", self._short_circuit)
        events.register("after-call.kinesis.PutRecords", self._after)

    def _before(self, params: dict[str, Any], **_: Any) -> None:
        self.calls += 1
        records = params["Records"]
        self._removed = [i for i, r in enumerate(records) if self.fail(r, self.calls)]
        self.failed += len(self._removed)
        self._send_nothing = len(self._removed) == len(records)
        if not self._send_nothing:
            params["Records"] = [r for i, r in enumerate(records) if i not in self._removed]

    def _short_circuit(self, **_: Any) -> Any:
        if self._send_nothing:
            return SimpleNamespace(status_code=200, headers={}), {"FailedRecordCount": 0, "Records": []}
        return None

    def _after(self, parsed: dict[str, Any], **_: Any) -> None:
        results = list(parsed.get("Records", []))
        for index in self._removed:
            results.insert(index, {"ErrorCode": "ProvisionedThroughputExceededException",
                                   "ErrorMessage": "Rate exceeded for shard"})
        parsed["Records"] = results
        parsed["FailedRecordCount"] = len(self._removed)


class CallFaults:
    """Raises a ClientError with `code` before chosen calls reach the service (nothing happens)."""

    def __init__(self, client: object, event: str, code: str, *, times: int = 1,
                 match: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.code = code
        self.remaining = times
        self.raised = 0
        self.match = match
        client.meta.events.register(f"before-parameter-build.{event}", self._before)  # type: ignore[attr-defined]

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        from botocore.exceptions import ClientError

        if self.remaining > 0 and (self.match is None or self.match(params)):
            self.remaining -= 1
            self.raised += 1
            raise ClientError({"Error": {"Code": self.code, "Message": "injected"}}, model.name)


def created_environment(endpoint: str) -> tuple[AwsSettings, dict[str, str]]:
    """Fresh resources on `endpoint`, and a process environment whose TQ_* variables name them
    (for a subprocess: the CLI, a Lambda handler)."""
    import asyncio
    import os

    settings = fresh_settings(endpoint)

    async def create() -> None:
        async with aws_resources(settings):
            pass

    asyncio.run(create())
    return settings, {**os.environ, **tq_variables(settings)}


def tq_variables(settings: AwsSettings) -> dict[str, str]:
    """The TQ_* variables that name `settings`' resources, as a process of the app reads them."""
    return {f"TQ_{k.upper()}": str(v) for k, v in settings.model_dump().items()
            if v is not None and not isinstance(v, bool)}

