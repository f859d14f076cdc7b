"""SnapStart, simulated: a fork after init clones the process's memory as a restore from the
snapshot does. Each copy must get its own worker id and random stream, and open its own
clients (none may exist at init), then work against moto's server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws.test_lambda_handlers import event_of
from tests.aws_support import created_environment
from tq_cloud import Task

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os, random, sys, types

hooks = []
runtime_module = types.ModuleType("snapshot_restore_py")  # what Lambda's Python runtime provides
runtime_module.register_after_restore = hooks.append
runtime_module.register_before_snapshot = lambda hook: None
sys.modules["snapshot_restore_py"] = runtime_module
os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"] = "snap-start"

from tq_cloud import TaskQueuesManager
from tq_cloud.aws_lambda import kinesis_handler, snapstart

if sys.argv[2] == "no reseed":  # the bug, reintroduced
    snapstart.reseed = lambda: None

app = TaskQueuesManager()

@app.task("q", "t")
async def t(task, actions):
    actions.success(task)

handler = kinesis_handler(app)  # the init that Lambda snapshots
runtime = handler.runtime
snapshot_random = random.getstate()
init = {"stack": runtime._stack is not None, "loop": runtime._loop is not None,
        "models_loaded": runtime.session is not None, "hooks": len(hooks)}
children = []
for _ in range(2):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a copy restored from the snapshot
        os.close(read)
        random.setstate(snapshot_random)  # CPython reseeds at fork; a restore from a snapshot does not
        for hook in hooks:
            hook()
        result = handler(json.loads(sys.argv[1]), None)
        stack = runtime.run(runtime.stack())
        out = {"worker_id": stack.handler.worker_id, "draw": random.random(), "result": result}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    children.append((pid, read))
copies = []
for pid, read in children:
    os.waitpid(pid, 0)
    copies.append(json.loads(os.read(read, 65536)))
print(json.dumps({"init": init, "copies": copies}))
"""


@pytest.mark.parametrize("variant", ["as built", "no reseed"])
def test_each_copy_of_the_snapshot_has_its_own_ids_random_stream_and_clients(moto_endpoint: str,
                                                                             variant: str) -> None:
    _, env = created_environment(moto_endpoint)
    env["POWERTOOLS_METRICS_DISABLED"] = "true"
    event = json.dumps(event_of(Task(id="snap", type="t", queue_id="q", payload={})))
    run = subprocess.run([sys.executable, "-c", SCRIPT, event, variant], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["init"] == {"stack": False, "loop": False, "models_loaded": True, "hooks": 1}, \
        "init loads the SDK's models, and opens no client, loop or worker id"
    first, second = report["copies"]
    assert first["result"] == second["result"] == {"batchItemFailures": []}, "each copy's own clients work"
    assert first["worker_id"] != second["worker_id"]
    if variant == "as built":
        assert first["draw"] != second["draw"], "the random stream is reseeded after a restore"
    else:
        assert first["draw"] == second["draw"], "without the reseed every copy draws the same numbers"
