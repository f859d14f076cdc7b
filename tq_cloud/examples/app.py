"""The example application deployed by template.yaml (`TQ_APP=tq_cloud.examples.app:app`): one
executor of each kind, a flow with a join, an entity-bound task, a delayed task and a schedule
every minute. Replace it with your own executors (`tq-cloud new NAME` scaffolds an app of your
own)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from tq_cloud import EntityRef, ExecutorActions, FlowConfig, JoinTarget, Task, TaskQueuesManager

app = TaskQueuesManager()


class Email(BaseModel):
    to: str
    subject: str = ""


@app.task("email", "send", retries=3, store_on_failure=True)
async def send_email(task: Task[Email], actions: ExecutorActions) -> None:
    if task.payload.to.endswith("@flaky.example") and task.retry_count < 1:
        raise ConnectionError("SMTP server busy")
    if task.payload.to.endswith("@invalid.example"):
        actions.fail(task, "mailbox does not exist")
        return
    actions.success(task, {"sent_to": task.payload.to})


@app.task("media", "resize", parallel=True, chunk_size=10)
async def resize(task: Task, actions: ExecutorActions) -> None:
    actions.success(task, {"thumbnail": f"{task.payload['image']}-200px"})


@app.batch_task("analytics", "track")
async def track(tasks: list[Task], actions: ExecutorActions) -> None:
    for task in tasks:
        actions.success(task)


@app.task("orders", "fulfil", store_on_failure=True)
async def fulfil(task: Task, actions: ExecutorActions) -> None:
    skus = task.payload["skus"]
    # a slow reservation retries after 15 s, well past the 3 s timeout of the demo's timed flow
    # (with 5 s, a loaded machine could fire the timeout after the retry's failure)
    actions.start_flow(
        [{"type": "reserve", "queue_id": "orders", "payload": {"sku": sku},
          "retry_after": 15_000 if sku.startswith("slow") else None} for sku in skus],
        FlowConfig(join=JoinTarget(type="ship", queue_id="orders"),
                   failure_policy=task.payload.get("policy", "continue"),
                   timeout_ms=task.payload.get("timeout_ms"),
                   entity=EntityRef(id=task.payload["order"], type="order")))
    actions.success(task)


@app.task("orders", "reserve", retries=1)
async def reserve(task: Task, actions: ExecutorActions) -> None:
    sku = task.payload["sku"]
    if sku.startswith("out-of-stock"):
        actions.fail(task, f"{sku} is out of stock")
    elif sku.startswith("slow"):
        actions.fail(task, f"{sku} still reserving")  # never done: the flow's timeout decides
    else:
        actions.success(task, {"sku": sku, "reserved": True})


@app.task("orders", "ship", store_on_failure=True)
async def ship(task: Task, actions: ExecutorActions) -> None:
    results = actions.flow_results(task)  # the steps' results, read a page at a time
    shipped = [step.result["sku"] async for step in results.steps() if step.status == "success"]
    actions.success(task, {"shipped": shipped, "aborted": results.aborted, "timed_out": results.timed_out})


@app.task("billing", "invoice", store_on_failure=True)
async def invoice(task: Task, actions: ExecutorActions) -> None:
    actions.success(task, {"invoice": f"inv-{task.key[:8]}"})


@app.task("ops", "heartbeat", keep_result=timedelta(hours=1))
async def heartbeat(task: Task, actions: ExecutorActions) -> dict[str, str]:
    """Each occurrence of the `heartbeat` schedule: `task.metadata.schedule` says which one."""
    scheduled = task.metadata.schedule
    return {"scheduled_at": scheduled.scheduled_at.isoformat() if scheduled else "?"}


app.schedule("heartbeat", task=heartbeat, every=timedelta(minutes=1))
