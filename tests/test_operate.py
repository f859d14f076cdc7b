"""Operating it end to end on the local runtime, as a user does from a terminal: failures listed
with their errors, re-driven once, the re-drive recorded; and every CLI error in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.aws_support import tq_variables
from tests.operate_support import Shop, enqueue, running_dev, wait_for
from tq_cloud import Task
from tq_cloud.cli import main

CLI = str(Path(sys.executable).parent / "tq-cloud")


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_failures_are_listed_redriven_once_and_the_redrive_recorded(
        moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    shop = Shop()
    charges = [Task(id=f"order-{i}", type="charge", queue_id="billing", payload={"amount": i}) for i in range(3)]
    notes = [Task(id=f"note-{i}", type="notify", queue_id="mail", payload={}) for i in range(5)]
    with running_dev(moto_endpoint, shop.app, charges + notes) as (_, settings):
        for name, value in tq_variables(settings).items():
            monkeypatch.setenv(name, value)
        failed = wait_for(lambda: (rows := cli_json(capsys, "tasks", "list", "--status", "failed"))
                          and len(rows) == 3 and rows, what="three failed tasks")
        assert {(t["id"], t["error"]) for t in failed} == {(f"order-{i}", f"card declined for order-{i}")
                                                             for i in range(3)}
        assert all(t["queue"] == "billing" and t["type"] == "charge" and t["attempts"] == 1 for t in failed)
        executed = wait_for(lambda: len(rows := cli_json(capsys, "tasks", "list", "--status", "executed")) == 5
                            and rows, what="history rows of the successes")
        assert {t["type"] for t in executed} == {"notify"}

        shop.broken = False  # the fix is deployed
        sent = cli_json(capsys, "redrive", *[t["id"] for t in failed])
        assert sorted(t["id"] for t in sent) == ["order-0", "order-1", "order-2"]
        wait_for(lambda: all(cli_json(capsys, "tasks", "show", f"order-{i}")["status"] == "executed" for i in range(3)),
                 what="the re-driven tasks to run")
        shown = cli_json(capsys, "tasks", "show", "order-1")
        assert shown["redrives"] == 1 and shown["redriven_at"] and shown["result"] == {"charged": 1}
        assert shown["attempts"] == 2
        assert cli_json(capsys, "redrive", "order-0", "order-1", "order-2") == [], "nothing to re-drive again"
        assert main(["redrive", "order-0", "no-such-task"]) == 0
        said = capsys.readouterr().out.splitlines()      # why each id was skipped, in words
        assert said[0] == "re-driven: 0"
        assert "skipped order-0: executed, not failed or ignored" in said
        assert any(line.startswith("skipped no-such-task: no stored task") for line in said)
        assert cli_json(capsys, "tasks", "list", "--status", "failed") == []

        assert cli_json(capsys, "tasks", "result", "order-1") == {"id": "order-1", "status": "executed",
                                                                  "result": {"charged": 1}}
        enqueue(settings, [Task(id="later", type="notify", queue_id="mail", payload={},
                                execute_at=datetime.now(UTC) + timedelta(hours=1))])
        assert main(["tasks", "result", "later", "--wait", "0.2"]) == 2
        assert "still scheduled" in capsys.readouterr().err
        assert main(["tasks", "cancel", "later", "--reason", "not needed"]) == 0
        assert main(["tasks", "cancel", "later"]) == 1, "a cancelled task was cancelled again"
        assert main(["tasks", "result", "later"]) == 1
        assert "cancelled: not needed" in capsys.readouterr().err
        assert cli_json(capsys, "tasks", "list", "--status", "cancelled")[0]["id"] == "later"
        assert main(["tasks", "result", "ghost"]) == 2 and main(["flows", "cancel", "ghost"]) == 1
    assert shop.runs == {**{f"order-{i}": 2 for i in range(3)}, **{t.key: 1 for t in notes}}, "later ran"


def _one_line(args: list[str], env: dict[str, str] | None = None, code: int = 1) -> str:
    result = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60,
                            env={**{k: v for k, v in os.environ.items() if not k.startswith("TQ_")}, **(env or {})})
    assert result.returncode == code and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    return line


def test_a_payload_that_is_not_json_is_one_line() -> None:
    line = _one_line(["enqueue", "--queue", "q", "--type", "t", "--payload", "{to: 1}"], code=2)
    assert line.startswith("tq-cloud enqueue: argument --payload: not JSON (Expecting property name")
    assert "give a JSON object" in line


def test_an_entity_without_type_and_id_is_one_line() -> None:
    line = _one_line(["enqueue", "--queue", "q", "--type", "t", "--entity", "user42"], code=2)
    assert line.startswith("tq-cloud enqueue: argument --entity: 'user42': give the entity as type:id")


def test_missing_credentials_are_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TQ_"))}
    env |= {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true"}
    result = subprocess.run([CLI, "tasks", "list"], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "tq-cloud tasks: no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
        "or give --endpoint-url for a local AWS"]


def test_an_unknown_setting_is_warned_with_the_nearest_name(moto_endpoint: str) -> None:
    result = subprocess.run([CLI, "tasks", "list", "--endpoint-url", moto_endpoint], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "TQ_TASK_TABLE": "x"})
    assert ("tq-cloud: warning: TQ_TASK_TABLE is not a tq-cloud setting (did you mean TQ_TASKS_TABLE?); "
            "it is ignored") in result.stderr.splitlines()


def test_a_table_that_does_not_exist_is_named(moto_endpoint: str) -> None:
    line = _one_line(["tasks", "list", "--endpoint-url", moto_endpoint], {"TQ_TASKS_TABLE": "nowhere-tasks"})
    assert line.startswith("tq-cloud tasks: ResourceNotFoundException: ")
    assert "tasks table nowhere-tasks" in line and "TqEnvironment" in line


def test_a_stream_that_does_not_exist_is_named(moto_endpoint: str) -> None:
    line = _one_line(["enqueue", "--queue", "q", "--type", "t", "--endpoint-url", moto_endpoint],
                     {"TQ_STREAM_NAME": "nowhere-stream"})
    assert line.startswith("tq-cloud enqueue: ResourceNotFoundException: ") and "stream nowhere-stream" in line


def test_redrive_without_ids_or_status_says_what_to_give(moto_endpoint: str) -> None:
    line = _one_line(["redrive", "--endpoint-url", moto_endpoint])
    assert line == "tq-cloud redrive: name the tasks: redrive ID [ID ...], or --status failed [--queue Q] [--type T]"


def test_schedules_are_listed_paused_and_resumed_from_the_cli(
        moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    from tests.aws_support import aws_resources, fresh_settings

    settings = fresh_settings(moto_endpoint)

    async def create() -> None:
        async with aws_resources(settings):
            pass

    asyncio.run(create())
    for name, value in tq_variables(settings).items():
        monkeypatch.setenv(name, value)
    app = ["--app", "tq_cloud.examples.app:app"]
    [heartbeat] = cli_json(capsys, "schedules", "list", *app)
    assert (heartbeat["name"], heartbeat["expression"], heartbeat["deployed"], heartbeat["paused"]) == (
        "heartbeat", "rate(1 minute)", "not deployed", False)
    assert len(heartbeat["next"]) == 3
    assert main(["schedules", "pause", "heartbeat", *app]) == 0
    assert "paused schedule heartbeat" in capsys.readouterr().out
    assert cli_json(capsys, "schedules", "list", *app)[0]["paused"] is True
    assert main(["schedules", "resume", "heartbeat", *app]) == 0
    assert "resumed schedule heartbeat" in capsys.readouterr().out
    assert cli_json(capsys, "schedules", "list", *app)[0]["paused"] is False
    line = _one_line(["schedules", "pause", "nope", *app, "--endpoint-url", moto_endpoint],
                     env=tq_variables(settings), code=1)
    assert "no schedule 'nope' is declared (heartbeat)" in line
