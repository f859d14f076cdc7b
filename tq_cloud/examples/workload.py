"""Tasks that drive the example app down every path: `tq-cloud dev --demo` enqueues them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tq_cloud import EntityRef, Task


def tasks() -> list[Task]:
    now = datetime.now(UTC)
    return [
        Task(id="email-ok", type="send", queue_id="email", payload={"to": "ada@example.com"}),
        Task(id="email-retried", type="send", queue_id="email", payload={"to": "bob@flaky.example"}, retry_after=500),
        Task(id="email-exhausted", type="send", queue_id="email", payload={"to": "x@invalid.example"},
             retries=1, retry_after=500),
        Task(id="email-delayed", type="send", queue_id="email", payload={"to": "cy@example.com"},
             execute_at=now + timedelta(seconds=3)),
        *[Task(type="resize", queue_id="media", payload={"image": f"img-{i}"}) for i in range(5)],
        *[Task(type="track", queue_id="analytics", payload={"event": "view", "n": i}) for i in range(20)],
        Task(id="order-continue", type="fulfil", queue_id="orders",
             payload={"order": "o-1", "skus": ["A", "out-of-stock-B", "C"]}),
        Task(id="order-abort", type="fulfil", queue_id="orders",
             payload={"order": "o-2", "skus": ["A", "out-of-stock-B", "C"], "policy": "abort"}),
        Task(id="order-timeout", type="fulfil", queue_id="orders",
             payload={"order": "o-3", "skus": ["A", "slow-B"], "timeout_ms": 3000}),
        Task(id="invoice-u7", type="invoice", queue_id="billing", payload={"amount": 12},
             entity=EntityRef(id="u-7", type="user"), force_store=True),
        Task(id="unknown", type="refund", queue_id="billing", payload={}),
    ]
