"""End to end: the example app run by the local runtime (moto's server, the emulated event
source mapping invoking the real worker handler, the sweeper on its schedule) through every
path to its terminal state."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tq_cloud import ExecutorActions, Task, TaskQueuesManager
from tq_cloud.aws_lambda import kinesis_handler, sweeper_handler
from tq_cloud.backends.aws import AwsSettings, open_clients
from tq_cloud.local.checkpoints import ShardCheckpoints
from tq_cloud.local.runtime import DevOptions, LocalRuntime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _own_tq_environment() -> Iterator[None]:
    """The local runtime exports TQ_* settings for the handlers it runs in this process, as
    `tq-cloud dev` does; each test starts without them and leaves none behind."""
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("TQ_")]}
    yield
    for name in [k for k in os.environ if k.startswith("TQ_")]:
        del os.environ[name]
    os.environ.update(saved)


async def test_example_app_reaches_every_terminal_state(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tq_cloud.examples.workload import tasks

    out = io.StringIO()
    options = DevOptions(app="tq_cloud.examples.app:app", endpoint_url=moto_endpoint, template=ROOT / "template.yaml",
                         sweep_interval=0.5,
                         batching_window=0.2, view_interval=0.5, until_settled=True, max_seconds=90)
    runtime = LocalRuntime(options, out)
    view = await runtime.run(asyncio.Event(), tasks())
    assert view is not None and view.settled, out.getvalue()
    assert view.flows == {"complete": 1, "aborted": 1, "timed_out": 1}
    # dev keeps history (TQ_HISTORY): the successes without rows of their own are stored too
    assert view.by_type[("send", "executed")] == 3 and view.by_type[("send", "failed")] == 1
    assert view.by_type[("track", "executed")] == 20 and view.by_type[("resize", "executed")] == 5
    assert view.by_type[("refund", "ignored")] == 1 and view.by_type[("invoice", "executed")] == 1
    assert runtime.esm is not None and runtime.esm.stats.sent_to_on_failure == []
    assert runtime.lane_esm is not None and runtime.lane_esm.stats.messages >= 3, "delays and retries took the lane"

    settings = AwsSettings(endpoint_url=moto_endpoint)
    async with open_clients(settings) as clients:
        from tq_cloud.backends.aws import DynamoDbAdapter, DynamoDbProjectionProvider

        storage = DynamoDbAdapter(clients.dynamodb, settings.tasks_table)
        rows = {t.key: t for t in await storage.get(["email-retried", "email-exhausted", "email-delayed"])}
        assert rows["email-retried"].retry_count == 1 and rows["email-retried"].status == "executed"
        assert rows["email-exhausted"].execution_stats.last_error == "mailbox does not exist"
        # it waited in the delay lane (the lane's messages above), and history keeps its outcome
        assert rows["email-delayed"].status == "executed" and rows["email-delayed"].retry_count == 0
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
    lines = out.getvalue().splitlines()
    views = [line for line in lines if line.startswith("stored tasks:") and "| delay lane:" in line]
    assert views and all(a != b for a, b in itertools.pairwise(views)), "a view is printed when it changes"
    assert f"export TQ_ENDPOINT_URL={moto_endpoint} TQ_APP_NAME=" in lines[1], "another shell's settings, printed"
    assert lines[-1].startswith("next: export TQ_ENDPOINT_URL=") and "tq-cloud tasks list --status failed" in lines[-1]
    assert "stopped with this run" not in lines[-1], "the endpoint was given: it outlives the run"
    assert lines[-2].startswith("everything settled; so far: ") and "failed for good" in lines[-2]
    outcome_lines = [line for line in lines if line.startswith(("  executed ", "  retrying ", "  failed ", "  ignored "))]
    assert outcome_lines and not [line for line in outcome_lines if " _flow." in line], \
        "the framework's own tasks (a flow's timeout sentinel) stay out of the outcome lines"


def test_the_readme_dev_command_runs_to_a_settled_state(aws_target: Any) -> None:
    """`tq-cloud dev --demo --until-settled` as the README gives it; with TQ_TEST_EMULATOR=dynalite,
    against dynalite and kinesalite (moto's server for SQS and the scheduler)."""
    import os
    import subprocess

    command = [str(Path(sys.executable).parent / "tq-cloud"), "dev", "--demo", "--until-settled", "--max-seconds", "90"]
    env = dict(os.environ)
    if aws_target.name != "moto":
        command += ["--endpoint-url", aws_target.endpoint, "--app-name", f"e2e{os.getpid()}"]
        env |= aws_target.environment()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    if aws_target.dynamodb:
        assert f"DynamoDB at {aws_target.dynamodb}" in result.stdout and f"Kinesis at {aws_target.kinesis}" in result.stdout
    assert "flows: aborted=1 complete=1 timed_out=1" in result.stdout
    assert result.stdout.rstrip().endswith("stopped")
    if aws_target.name == "moto":  # its own moto server: gone with the run, and the hint says so
        assert "next: the local AWS stopped with this run" in result.stdout
    assert "Unclosed client session" not in result.stderr


def test_enqueue_and_status_commands(moto_endpoint: str) -> None:
    import subprocess

    from tests.aws_support import created_environment

    _, env = created_environment(moto_endpoint)
    cli = str(Path(sys.executable).parent / "tq-cloud")
    added = subprocess.run([cli, "enqueue", "--queue", "q", "--type", "t", "--payload", '{"a": 1}', "--delay", "600",
                            "--entity", "user:u1", "--allow-unknown"], env=env, capture_output=True, text=True,
                           timeout=60, check=True)
    task_id = added.stdout.strip()
    assert len(task_id) == 32
    status = subprocess.run([cli, "status", "--entity", "user:u1"], env=env, capture_output=True, text=True,
                            timeout=60, check=True)
    assert "scheduled=1" in status.stdout and task_id in status.stdout


def test_enqueue_checks_the_task_against_the_app_before_sending(moto_endpoint: str, tmp_path: Path) -> None:
    """An unknown (queue, type), a payload its executor refuses, or a payload that is not an
    object: one line that says what to do, exit 1, nothing sent. A payload from a file or stdin."""
    import subprocess

    from tests.aws_support import created_environment

    _, env = created_environment(moto_endpoint)
    env = {**env, "TQ_APP": "tq_cloud.examples.app:app"}
    cli = str(Path(sys.executable).parent / "tq-cloud")

    def enqueue(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cli, "enqueue", *args], env=env, capture_output=True, text=True, timeout=60,
                              input=stdin, cwd=tmp_path)

    for args, says in ((("--queue", "email", "--type", "sned", "--payload", '{"to": "a@b.c"}'), "no executor takes"),
                       (("--queue", "email", "--type", "send", "--payload", '{"too": 1}'), "to: Field required"),
                       (("--queue", "email", "--type", "send", "--payload", "[1, 2]"), "not an object")):
        refused = enqueue(*args)
        assert refused.returncode != 0 and says in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, \
            refused.stderr
        assert "Traceback" not in refused.stderr
    payload = tmp_path / "email.json"
    payload.write_text('{"to": "a@b.c"}')
    assert enqueue("--queue", "email", "--type", "send", "--payload-file", str(payload)).returncode == 0
    assert enqueue("--queue", "email", "--type", "send", "--payload-file", "-", stdin='{"to": "x@y.z"}').returncode == 0
    assert enqueue("--queue", "else", "--type", "where", "--allow-unknown").returncode == 0


def _counting_app(runs: Counter[str], *types: str) -> TaskQueuesManager:
    """An app whose executors count each run of a task (by id)."""
    app = TaskQueuesManager()
    for task_type in types:
        @app.task("q", task_type)
        async def count(task: Task, actions: ExecutorActions) -> None:
            runs[task.key] += 1
            actions.success(task)
    return app


def _dev_options(endpoint: str, app: TaskQueuesManager, settings: AwsSettings) -> DevOptions:
    return DevOptions(endpoint_url=endpoint, template=ROOT / "template.yaml", aws=settings,
                      worker=kinesis_handler(app, settings), sweeper=sweeper_handler(app, settings),
                      sweep_interval=0.5, batching_window=0.1, view_interval=0.3, until_settled=True, max_seconds=60)


def _tasks(task_type: str, n: int) -> list[Task]:
    return [Task(id=f"{task_type}-{i}", type=task_type, queue_id="q", payload={}) for i in range(n)]


async def test_a_restarted_dev_resumes_after_its_checkpoints(moto_endpoint: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Lambda's mapping keeps a checkpoint per shard; so does the local one, on the endpoint: a
    second run against the same endpoint delivers nothing the first one finished. Without the
    checkpoints (the bug, reintroduced) the restart runs every task in the stream again."""
    runs: Counter[str] = Counter()
    app = _counting_app(runs, "count")
    settings = AwsSettings(endpoint_url=moto_endpoint, app_name="resume")
    first = await LocalRuntime(_dev_options(moto_endpoint, app, settings), io.StringIO()).run(
        asyncio.Event(), _tasks("count", 6))
    assert first is not None and first.settled and runs == Counter({f"count-{i}": 1 for i in range(6)})

    restarted = LocalRuntime(_dev_options(moto_endpoint, app, settings), io.StringIO())
    await restarted.run(asyncio.Event())
    assert restarted.esm is not None and restarted.esm.stats.records == 0
    assert runs == Counter({f"count-{i}": 1 for i in range(6)})

    async def no_checkpoint(self: ShardCheckpoints, stream_arn: str, shard: str) -> None:
        return None

    monkeypatch.setattr(ShardCheckpoints, "get", no_checkpoint)
    await LocalRuntime(_dev_options(moto_endpoint, app, settings), io.StringIO()).run(asyncio.Event())
    assert runs == Counter({f"count-{i}": 2 for i in range(6)}), "the check cannot see a restart from the start"


@pytest.mark.parametrize("names", ["per app", "shared (the bug)"])
async def test_two_apps_on_one_endpoint_keep_apart(moto_endpoint: str, names: str) -> None:
    """Each app's local resources are named after it, so two apps run side by side on one
    endpoint; with shared names each marks the other's tasks ignored."""
    runs: Counter[str] = Counter()
    apps = {kind: _counting_app(runs, kind) for kind in ("shop", "mail")}
    suffix = uuid.uuid4().hex[:6]
    settings = {kind: AwsSettings(endpoint_url=moto_endpoint,
                                  app_name=f"{kind}-{suffix}" if names == "per app" else f"both-{suffix}")
                for kind in apps}
    runtimes = {kind: LocalRuntime(_dev_options(moto_endpoint, apps[kind], settings[kind]), io.StringIO())
                for kind in apps}
    views = await asyncio.gather(*(runtimes[kind].run(asyncio.Event(), _tasks(kind, 5)) for kind in apps))
    ignored = sum(n for view in views if view for (_, status), n in view.by_type.items() if status == "ignored")
    if names == "per app":
        assert ignored == 0 and runs == Counter({f"{kind}-{i}": 1 for kind in apps for i in range(5)})
    else:
        assert ignored > 0


def test_app_names_come_from_the_folder(tmp_path: Path) -> None:
    from tq_cloud.backends.aws.settings import folder_app_name

    assert folder_app_name(tmp_path / "My Shop!") == "My-Shop"
    assert folder_app_name(tmp_path / "...") == "tq"
    names = AwsSettings(app_name=folder_app_name(tmp_path / "shop"))
    assert (names.stream_name, names.tasks_table, names.barriers_table) == (
        "shop-tasks", "shop-tasks", "shop-flow-barriers")
    assert AwsSettings(app_name="shop", tasks_table="given").tasks_table == "given"


def test_the_local_runtime_and_the_cli_name_the_same_resources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From one's own Python, the local runtime defaults the app name as the CLI does (the
    folder's), so `tq-cloud tasks` run in the same folder finds what it made."""
    from tq_cloud.cli import build_parser
    from tq_cloud.local.runtime import settings_for

    folder = tmp_path / "shop"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.delenv("TQ_APP_NAME", raising=False)
    cli = build_parser().parse_args(["tasks", "list", "--status", "failed"])
    assert settings_for("http://127.0.0.1:1").app_name == cli.app_name == "shop"


def test_a_bad_app_name_is_one_line_that_says_what_to_use() -> None:
    import subprocess

    result = subprocess.run([str(Path(sys.executable).parent / "tq-cloud"), "status", "--app-name", "my app"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line == ("tq-cloud status: argument --app-name: 'my app': use 1 to 40 letters, digits, '-', '_' or '.' "
                    "(see tq-cloud --help)")


@pytest.mark.parametrize("endpoint", ["closed port", "silent listener"])
@pytest.mark.parametrize("command", ["status", "dev"])
def test_an_endpoint_that_does_not_answer_is_reported_within_seconds(endpoint: str, command: str) -> None:
    """One line that says what to do, within 5 s, not a traceback after the SDK's 45 s of retries
    (and no credentials needed for a local endpoint)."""
    import socket
    import subprocess
    import time

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if endpoint == "silent listener":
            listener.listen()  # accepts connections, never answers
        port = listener.getsockname()[1]
        if endpoint == "closed port":
            listener.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TQ_"))}
        started = time.monotonic()
        result = subprocess.run([str(Path(sys.executable).parent / "tq-cloud"), command, "--endpoint-url",
                                 f"http://127.0.0.1:{port}"], capture_output=True, text=True, timeout=60, env=env)
    assert time.monotonic() - started < 8, "reported within seconds (5 s, and the interpreter's start)"
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"tq-cloud {command}: cannot reach http://127.0.0.1:{port}")
    assert line.endswith("start moto or LocalStack there, or leave out --endpoint-url")


class _HalfAws:
    """An endpoint that answers ListTables (so it looks alive) and then fails every other call
    with a 500 (LocalStack's DynamoDB without its JDK), or holds it unanswered (`hang`)."""

    def __init__(self, hang: bool) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.asked = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("X-Amz-Target", "").endswith("ListTables"):
                    self._answer(200, {"TableNames": []})
                    return
                outer.asked.set()
                if hang:
                    outer.release.wait(60)
                self._answer(500, {"__type": "InternalFailure", "message": "DynamoDB Local is not installed"})

            def _answer(self, status: int, body: dict[str, object]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _HalfAws:
        import threading

        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()


def _dev_process(endpoint: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TQ_"))}
    return subprocess.Popen([str(Path(sys.executable).parent / "tq-cloud"), "dev", "--endpoint-url", endpoint],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_an_endpoint_that_keeps_failing_is_one_line_within_seconds() -> None:
    with _HalfAws(hang=False) as aws:
        started = time.monotonic()
        process = _dev_process(aws.url)
        _, err = process.communicate(timeout=60)
    assert time.monotonic() - started < 15 and process.returncode == 1
    [line] = err.strip().splitlines()
    assert line.startswith(f"tq-cloud dev: creating the resources at {aws.url} failed (ClientError: ")
    assert "InternalFailure" in line and line.endswith("check that it serves DynamoDB, Kinesis, SQS and "
                                                       "EventBridge Scheduler")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_dev_stops_cleanly_while_it_creates_the_resources(sig: signal.Signals) -> None:
    """The endpoint holds CreateTable unanswered; the signal, sent while dev waits on it, stops
    dev at once: no traceback, exit 0, 'stopped' (before, it waited out the SDK's timeouts)."""
    with _HalfAws(hang=True) as aws:
        process = _dev_process(aws.url)
        try:
            assert aws.asked.wait(30), "dev never got to creating the resources"
            signalled = time.monotonic()
            process.send_signal(sig)
            out, err = process.communicate(timeout=30)
        finally:
            process.kill()
    assert time.monotonic() - signalled < 5, "stopped within seconds"
    assert process.returncode == 0 and "Traceback" not in err, err[-2000:]
    assert out.rstrip().endswith("stopped")
