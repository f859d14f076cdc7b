"""End to end: the example app run by the local runtime (moto's server, the emulated event
source mapping invoking the real worker handler, the sweeper on its schedule) through every
path to its terminal state."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest

from tq_cloud.backends.aws import AwsSettings, open_clients
from tq_cloud.local.runtime import DevOptions, LocalRuntime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _project_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    for name in list(sys.modules):
        if name.startswith("functions"):
            del sys.modules[name]


async def test_example_app_reaches_every_terminal_state(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in __import__("os").environ if v.startswith("TQ_")]:
        monkeypatch.delenv(var)
    from functions.example_workload import tasks

    out = io.StringIO()
    options = DevOptions(endpoint_url=moto_endpoint, template=ROOT / "template.yaml", sweep_interval=0.5,
                         batching_window=0.2, view_interval=0.5, until_settled=True, max_seconds=90)
    runtime = LocalRuntime(options, out)
    view = await runtime.run(asyncio.Event(), tasks())
    assert view is not None and view.settled, out.getvalue()
    assert view.flows == {"complete": 1, "aborted": 1, "timed_out": 1}
    assert view.by_type[("send", "executed")] == 2 and view.by_type[("send", "failed")] == 1
    assert view.by_type[("refund", "ignored")] == 1 and view.by_type[("invoice", "executed")] == 1
    assert runtime.esm is not None and runtime.esm.stats.sent_to_on_failure == []

    settings = AwsSettings(endpoint_url=moto_endpoint)
    async with open_clients(settings) as clients:
        from tq_cloud.backends.aws import DynamoDbAdapter, DynamoDbProjectionProvider

        storage = DynamoDbAdapter(clients.dynamodb, settings.tasks_table)
        rows = {t.key: t for t in await storage.get(["email-retried", "email-exhausted", "email-delayed"])}
        assert rows["email-retried"].retry_count == 1 and rows["email-retried"].status == "executed"
        assert rows["email-exhausted"].execution_stats.last_error == "mailbox does not exist"
        assert rows["email-delayed"].status == "executed"
        projections = DynamoDbProjectionProvider(clients.dynamodb, settings.projections_table)
        [invoice] = await projections.for_entity("user", "u-7")
        assert invoice.status == "executed" and invoice.result == {"invoice": "inv-invoice-"}
        outcomes = {}
        for order in ("o-1", "o-2", "o-3"):
            [flow] = await projections.for_entity("order", order)
            outcomes[order] = (flow.status.value, json.dumps(flow.result, sort_keys=True) if flow.result else flow.error)
    assert outcomes["o-1"][0] == "executed" and '"shipped": ["A", "C"]' in outcomes["o-1"][1]
    assert outcomes["o-2"] == ("failed", "flow_aborted")
    assert outcomes["o-3"] == ("failed", "flow_timeout")
    assert "stored tasks:" in out.getvalue()


def test_the_readme_dev_command_runs_to_a_settled_state() -> None:
    import subprocess

    result = subprocess.run([str(Path(sys.executable).parent / "tq-cloud"), "dev", "--demo", "--until-settled",
                             "--max-seconds", "90"], cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "flows: aborted=1 complete=1 timed_out=1" in result.stdout
    assert result.stdout.rstrip().endswith("stopped")
    assert "Unclosed client session" not in result.stderr


def test_enqueue_and_status_commands(moto_endpoint: str) -> None:
    import os
    import subprocess

    from tests.aws_support import aws_resources, fresh_settings

    settings = fresh_settings(moto_endpoint)

    async def create() -> None:
        async with aws_resources(settings):
            pass

    asyncio.run(create())
    env = {**os.environ, **{f"TQ_{k.upper()}": str(v) for k, v in settings.model_dump().items()
                            if v is not None and not isinstance(v, bool)}}
    cli = str(Path(sys.executable).parent / "tq-cloud")
    added = subprocess.run([cli, "enqueue", "--queue", "q", "--type", "t", "--payload", '{"a": 1}', "--delay", "600",
                            "--entity", "user:u1"], env=env, capture_output=True, text=True, timeout=60, check=True)
    task_id = added.stdout.strip()
    assert len(task_id) == 32
    status = subprocess.run([cli, "status", "--entity", "user:u1"], env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    assert "scheduled=1" in status.stdout and task_id in status.stdout
