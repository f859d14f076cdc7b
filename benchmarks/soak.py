"""Soak the local runtime over loopback: tasks at a fixed rate for a bounded time, reporting
resident memory and the stream's iterator age as it goes.

    python benchmarks/soak.py --rate 50 --seconds 300

Passes when memory in the last third of the run stays within 20% of the middle third (no
growth without bound) and every task was processed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tq_cloud import ExecutorActions, Task, TaskQueuesManager  # noqa: E402
from tq_cloud.aws_lambda import kinesis_handler, sweeper_handler  # noqa: E402
from tq_cloud.backends.aws import AwsSettings, aws_stack  # noqa: E402
from tq_cloud.local.moto import moto_server  # noqa: E402
from tq_cloud.local.runtime import DevOptions, LocalRuntime  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


async def soak(endpoint: str, rate: float, seconds: float) -> dict[str, object]:
    processed: list[str] = []
    app = TaskQueuesManager()

    @app.task("soak", "work")
    async def work(task: Task, actions: ExecutorActions) -> None:
        processed.append(task.key)
        actions.success(task)

    aws = AwsSettings(endpoint_url=endpoint, stream_name="soak", tasks_table="soak-tasks",
                      barriers_table="soak-barriers", projections_table="soak-proj", locks_table="soak-locks",
                      schedule_group="soak")
    runtime = LocalRuntime(DevOptions(endpoint_url=endpoint, template=ROOT / "template.yaml", aws=aws,
                                      worker=kinesis_handler(app, aws), sweeper=sweeper_handler(app, aws),
                                      sweep_interval=5, batching_window=0.2, view_interval=3600), io.StringIO())
    stop = asyncio.Event()
    runner = asyncio.ensure_future(runtime.run(stop))
    while runtime.esm is None:
        await asyncio.sleep(0.05)
    samples: list[tuple[float, float, float]] = []
    sent = 0
    started = time.monotonic()
    async with aws_stack(TaskQueuesManager(), aws) as producer:
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                await producer.handler.add_tasks([Task(type="work", queue_id="soak", payload={"n": sent + i})
                                                  for i in range(due)], allow_unknown=True)
                sent += due
            samples.append((elapsed, rss_mb(), runtime.esm.stats.iterator_age_ms))
            await asyncio.sleep(0.25)
    deadline = time.monotonic() + 30
    while len(set(processed)) < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    stop.set()
    await runner
    third = max(len(samples) // 3, 1)
    middle = max(s[1] for s in samples[third:2 * third] or samples)
    last = max(s[1] for s in samples[2 * third:] or samples)
    return {"sent": sent, "processed": len(set(processed)), "rss_start_mb": samples[0][1], "rss_middle_mb": middle,
            "rss_end_mb": last, "max_iterator_age_ms": runtime.esm.stats.max_iterator_age_ms,
            "bounded": last <= middle * 1.2, "samples": samples}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50, help="tasks per second")
    parser.add_argument("--seconds", type=float, default=300)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    with moto_server() as endpoint:
        result = asyncio.run(soak(endpoint, args.rate, args.seconds))
    logging.disable(logging.NOTSET)
    for elapsed, rss, age in result["samples"][:: max(len(result["samples"]) // 10, 1)]:  # type: ignore[index]
        print(f"  t={elapsed:6.1f}s  rss={rss:7.1f} MB  iterator age={age:8.0f} ms")
    print(f"{result['sent']} tasks sent at {args.rate}/s for {args.seconds:.0f}s, {result['processed']} processed; "
          f"rss {result['rss_start_mb']:.0f} -> {result['rss_middle_mb']:.0f} -> {result['rss_end_mb']:.0f} MB; "
          f"max iterator age {result['max_iterator_age_ms']:.0f} ms; memory bounded: {result['bounded']}")
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(0 if outcome["bounded"] and outcome["processed"] == outcome["sent"] else 1)
