"""What ships is what the tests ran: the wheel, installed into a fresh venv outside the
repository, scaffolds a project whose tests pass and that `tq-cloud dev` runs to the end; and the
Lambda deployment package the Makefile builds handles a real-shaped Kinesis event on its own
(an interpreter with no site-packages), against moto's server."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.aws.test_lambda_handlers import event_of
from tests.aws_support import created_environment
from tq_cloud import EntityRef, Task

ROOT = Path(__file__).resolve().parents[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no TQ_* settings, nothing of this repository on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TQ_", "PYTHON", "VIRTUAL_ENV"))}
    return {**env, **extra}


def _run(args: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env or _clean_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT)], dist, 300)
    [built] = dist.glob("tq_cloud-*.whl")
    return built


@pytest.mark.timeout(600)
def test_the_wheel_scaffolds_a_project_that_tests_and_runs_locally(wheel: Path, tmp_path: Path) -> None:
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python, cli = environment / "bin" / "python", environment / "bin" / "tq-cloud"
    _run([str(python), "-m", "pip", "install", "--quiet", f"{wheel}[aws,local]", "pytest>=8.2", "pytest-asyncio>=0.24"],
         tmp_path, 480)
    work = tmp_path / "work"
    work.mkdir()
    _run([str(cli), "new", "demoapp"], work, 60)
    project = work / "demoapp"
    assert (project / "template.yaml").read_text().count("Default: demoapp.tasks:app") == 1
    for function in ("worker", "sweeper"):  # the repository's own functions/, carried by the wheel
        assert (project / "functions" / function / "handler.py").read_text() == \
            (ROOT / "functions" / function / "handler.py").read_text()
    assert _run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, 120).count("passed") == 1
    out = _run([str(cli), "dev", "--seed", "demoapp.tasks:example_tasks", "--until-settled", "--max-seconds", "120"],
               project, 180)
    assert "enqueued 7 tasks" in out and "greet            failed      1" in out, out
    assert out.rstrip().endswith("stopped"), out


def _lambda_platform() -> str:
    return {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64"}[platform.machine()]


@pytest.mark.timeout(600)
def test_the_deployment_package_alone_runs_the_worker_and_the_sweeper(moto_endpoint: str, tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    _run(["make", "-s", "build-TqCloudLayer", f"ARTIFACTS_DIR={layer}", f"PYTHON={sys.executable}",
          f"PLATFORM={_lambda_platform()}"], ROOT, 480)
    settings, env = created_environment(moto_endpoint)
    tasks = [Task(id="invoice-1", type="invoice", queue_id="billing", payload={"amount": 3},
                  entity=EntityRef(type="user", id="u-1")),
             Task(id="unknown-1", type="refund", queue_id="billing", payload={})]
    script = f"""
import importlib.util, json, sys
sys.path[:0] = [{str(layer / "python")!r}]  # where Lambda mounts a layer's python/ folder
def function(name):  # as Lambda loads `handler.handler` from the function's own folder
    spec = importlib.util.spec_from_file_location(name, {str(ROOT / "functions")!r} + f"/{{name}}/handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handler
class Context:
    def get_remaining_time_in_millis(self): return 300_000
event = json.loads(sys.stdin.read())
print(json.dumps({{"worker": function("worker")(event, Context()), "sweeper": function("sweeper")({{}}, Context()),
                  "outside": sorted({{m.__file__ for m in list(sys.modules.values())
                                     if getattr(m, "__file__", None) and "-packages" in m.__file__}})}}))
"""
    lambda_env = _clean_env(**{k: v for k, v in env.items() if k.startswith("TQ_")},
                            TQ_APP="tq_cloud.examples.app:app", POWERTOOLS_METRICS_DISABLED="true")
    done = subprocess.run([sys.executable, "-S", "-s", "-c", script], input=json.dumps(event_of(*tasks)),
                          env=lambda_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["worker"] == {"batchItemFailures": []} and result["sweeper"] == {"sent": 0}
    assert result["outside"] == [], "the package imported something it does not hold"
    kept = sorted(p.name for p in (layer / "python" / "botocore" / "data").iterdir() if p.is_dir())
    assert kept == ["dynamodb", "kinesis", "scheduler", "sqs", "sts"], "only the models of the services called"

    import boto3

    table = boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")
    rows = {i["id"]["S"]: i["status"]["S"] for i in table.scan(TableName=settings.tasks_table)["Items"] if "status" in i}
    assert rows == {"unknown-1": "ignored"}, "an unknown type is stored with its reason"
    projections = table.scan(TableName=settings.projections_table)["Items"]
    assert [(p["task_id"]["S"], p["status"]["S"]) for p in projections] == [("invoice-1", "executed")]
