"""Lambda SnapStart: the costly part of a cold start happens at init, before the snapshot, and
nothing that must be unique or fresh is in the snapshot.

With SnapStart (Python 3.12 and later, `SnapStart: ApplyOn: PublishedVersions`), Lambda runs a
function's init once, snapshots its memory, and starts every new container from a copy. The
handlers therefore do their costly work at init when Lambda says it is a SnapStart init
(`AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`): they import the AWS SDK and load the service
models of the clients they will open, and build the pydantic validators of the app's payload
models. They never open clients (connections, credentials), create the event loop, choose a
worker id or read the clock there: all of that happens on the first invocation, in each copy.
After a restore, the module-level `random` generator, which every copy would otherwise share,
is seeded afresh (the engine's own generators are made per container, after the restore).

Your module-level state must follow the same rule: build at import what is expensive and the
same for every container; open connections, pick ids and seed generators in the handler (or
in a hook: `register_after_restore(fn)` below runs `fn` after each restore).

Without SnapStart (an on-demand init), none of this runs: the SDK is imported on the first
invocation, as before, which keeps that cold start short.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from tq_cloud.core.registry import TaskQueuesManager

SERVICES = ("kinesis", "dynamodb", "sqs", "scheduler")


def snap_start_init() -> bool:
    """True during the init that Lambda snapshots."""
    return os.environ.get("AWS_LAMBDA_INITIALIZATION_TYPE") == "snap-start"


def register_after_restore(hook: Callable[[], Any]) -> None:
    """Run `hook` after each restore from the snapshot (a no-op outside Lambda's runtime)."""
    try:
        from snapshot_restore_py import (  # type: ignore[import-not-found]  # Lambda's Python runtime
            register_after_restore as register,
        )
    except ImportError:
        return
    register(hook)


def prepare_snapshot(app: TaskQueuesManager) -> Any:
    """The init work worth snapshotting; returns the SDK session whose service models it loaded
    (the runtime opens its clients from it, so the loading is not done twice)."""
    import aioboto3

    session = aioboto3.Session()
    loader = session._session.get_component("data_loader")  # caches what it reads, for the clients
    for service in SERVICES:
        loader.load_service_model(service, "service-2")
    loader.load_data("endpoints")
    for queue_id in app.get_queues():
        for task_type in app.get_task_types_for_queue(queue_id):
            executor = app.get_executor(queue_id, task_type)
            if executor is not None and executor.options.payload_model is not None:
                executor.options.payload_model.model_json_schema()  # builds what validation needs
    register_after_restore(reseed)
    return session


def reseed() -> None:
    """Every copy of the snapshot starts with the same generator state: seed it from the OS."""
    random.seed()
