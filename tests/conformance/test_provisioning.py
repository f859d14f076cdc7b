"""Provisioning waits for what it creates: on AWS and in realistic emulators a table, its
indexes and a stream are CREATING for a while, and a call before they are ACTIVE fails."""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator_support import selected
from tq_cloud.local import ready
from tq_cloud.local.provision import create_resources
from tq_cloud.local.ready import ResourceNotReadyError, until_ready


async def test_every_resource_is_active_when_provisioning_returns(aws_target: Any) -> None:
    from tq_cloud.backends.aws import open_clients

    settings = aws_target.settings()
    async with open_clients(settings) as clients:
        await create_resources(clients, settings)
        for table in (settings.tasks_table, settings.barriers_table, settings.projections_table, settings.locks_table):
            described = (await clients.dynamodb.describe_table(TableName=table))["Table"]
            states = {described["TableStatus"], *(i["IndexStatus"] for i in described.get("GlobalSecondaryIndexes", []))}
            assert states == {"ACTIVE"}, f"{table} is {states} when provisioning returned"
        summary = (await clients.kinesis.describe_stream_summary(StreamName=settings.stream_name))
        assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"


@pytest.mark.skipif(selected() == "moto", reason="moto makes resources ACTIVE at once: this runs on dynalite "
                                                  "and kinesalite (TQ_TEST_EMULATOR=dynalite, as .ci/run does)")
async def test_the_readiness_check_fails_without_the_waiters(aws_target: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async def at_once(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr("tq_cloud.local.provision.table_ready", at_once)
    monkeypatch.setattr("tq_cloud.local.provision.stream_ready", at_once)
    with pytest.raises(AssertionError, match="when provisioning returned"):
        await test_every_resource_is_active_when_provisioning_returns(aws_target)


async def test_a_resource_that_never_becomes_active_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    states = iter(["CREATING", "CREATING", "ACTIVE"])

    async def creating_then_active() -> str | None:
        return next(states)

    await until_ready("table t", creating_then_active, within=5)
    monkeypatch.setattr(ready, "READY_WITHIN", 0.2)

    async def forever() -> str | None:
        return "CREATING"

    with pytest.raises(ResourceNotReadyError, match=r"^table stuck is CREATING after 0 s") as caught:
        await until_ready("table stuck", forever, within=0.2)
    assert "\n" not in str(caught.value)
