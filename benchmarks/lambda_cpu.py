"""CPU time of the worker Lambda's handler per task, on real-shaped events of KPL aggregated
records (the shape tq-cloud's producers write), for no-op tasks.

    python benchmarks/lambda_cpu.py                       # 100 records x 25 tasks, 20 events
    python benchmarks/lambda_cpu.py --records 10 --per-record 5 --events 2

The handler is the one `sam deploy` runs (`kinesis_handler`: de-aggregation, decoding and
validation, the run, the commit pipeline, the tally and its EMF lines, the partial batch
response), on the AWS backends against moto's server in a child process, so that this process's
CPU time (`time.process_time`) is the handler's alone; a no-op task makes no AWS call. The EMF
lines go to /dev/null (Lambda ships stdout to CloudWatch Logs outside the function). One
warm-up event first, as a warm container. Prints `lambda cpu per task: N us` (target: <= 20).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.aws_support import aws_resources, fresh_settings
from tq_cloud import ExecutorActions, Task
from tq_cloud.aws_lambda import kinesis_handler
from tq_cloud.backends.aws.kpl import aggregate
from tq_cloud.core.codec import encode_task
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.local.moto import moto_server

RECORD = {"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "", "sequenceNumber": "",
                      "data": "", "approximateArrivalTimestamp": 1_700_000_000.0},
          "eventSource": "aws:kinesis", "eventVersion": "1.0", "eventID": "", "eventName": "aws:kinesis:record",
          "invokeIdentityArn": "arn:aws:iam::123456789012:role/tq-worker", "awsRegion": "us-east-1",
          "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/tq"}


class Context:
    function_name = "tq-worker"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def event(number: int, records: int, per_record: int) -> dict[str, Any]:
    out = []
    for r in range(records):
        tasks = [Task(id=f"e{number}-r{r}-t{t}", type="noop", queue_id="bench", payload={"n": t})
                 for t in range(per_record)]
        record = copy.deepcopy(RECORD)
        data = aggregate([(t.key, encode_task(t)) for t in tasks])
        seq = f"{number * records + r:056d}"
        record["kinesis"].update(data=base64.b64encode(data).decode(), partitionKey=tasks[0].key, sequenceNumber=seq)
        record["eventID"] = f"shardId-000000000000:{seq}"
        out.append(record)
    return {"Records": out}


def app() -> TaskQueuesManager:
    registry = TaskQueuesManager()

    @registry.task("bench", "noop")
    async def noop(task: Task, actions: ExecutorActions) -> None:
        return None

    return registry


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--per-record", type=int, default=25)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    with moto_server(own_process=True) as endpoint:
        settings = fresh_settings(endpoint).model_copy(update={"counters": "metrics"})

        async def create() -> None:
            async with aws_resources(settings):
                pass

        asyncio.run(create())
        handler = kinesis_handler(app(), settings)
        events = [event(n, args.records, args.per_record) for n in range(args.events + 1)]
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            assert handler(events[0], Context()) == {"batchItemFailures": []}  # a warm container
            started = time.process_time()
            for e in events[1:]:
                assert handler(e, Context()) == {"batchItemFailures": []}
            spent = time.process_time() - started
    logging.disable(logging.NOTSET)
    tasks = args.events * args.records * args.per_record
    per_task = spent / tasks * 1e6
    print(f"{args.events} events of {args.records} records x {args.per_record} tasks: {tasks} no-op tasks in "
          f"{spent:.2f} s of CPU")
    print(f"lambda cpu per task: {per_task:.1f} us (target: <= 20)")
    return per_task


if __name__ == "__main__":
    main()
