"""tq-cloud: a serverless Python task queue on AWS (Kinesis, DynamoDB, EventBridge)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tq_cloud.lazy import lazy_exports

_EXPORTS = {
    "AsyncTaskManager": "tq_cloud.asynctasks.manager",
    "AsyncTaskManagerOptions": "tq_cloud.asynctasks.manager",
    "BatchReport": "tq_cloud.assembly.handler",
    "BatchTaskExecutor": "tq_cloud.core.executors",
    "BoundExecutor": "tq_cloud.core.sending",
    "Clock": "tq_cloud.clock",
    "ConsoleHealthProvider": "tq_cloud.lifecycle.console",
    "EntityRef": "tq_cloud.domain.task",
    "ExecutorActions": "tq_cloud.core.actions",
    "ExecutorHandle": "tq_cloud.core.sending",
    "ExecutorOptions": "tq_cloud.core.executors",
    "FlowConfig": "tq_cloud.domain.flows",
    "FlowLifecycleProvider": "tq_cloud.ports.lifecycle",
    "FlowResults": "tq_cloud.domain.flows",
    "FlowStep": "tq_cloud.domain.flows",
    "HandlerSettings": "tq_cloud.core.settings",
    "InvalidDelayError": "tq_cloud.errors",
    "InvalidPayloadError": "tq_cloud.errors",
    "JoinTarget": "tq_cloud.domain.task",
    "LifecycleConfig": "tq_cloud.core.emitter",
    "ManualClock": "tq_cloud.clock",
    "NonRetryableError": "tq_cloud.errors",
    "Operations": "tq_cloud.operations",
    "ProjectionConfig": "tq_cloud.projections.sink",
    "ResultNotKeptError": "tq_cloud.errors",
    "SingleTaskExecutor": "tq_cloud.core.executors",
    "SystemClock": "tq_cloud.clock",
    "Task": "tq_cloud.domain.task",
    "TaskCancelledError": "tq_cloud.errors",
    "TaskFailedError": "tq_cloud.errors",
    "TaskHandler": "tq_cloud.assembly.handler",
    "TaskLifecycleProvider": "tq_cloud.ports.lifecycle",
    "TaskPage": "tq_cloud.ports.storage",
    "TaskProgress": "tq_cloud.domain.task",
    "TaskQuery": "tq_cloud.ports.storage",
    "TaskQueuesManager": "tq_cloud.core.registry",
    "TaskStatus": "tq_cloud.domain.task",
    "TaskTimeoutError": "tq_cloud.errors",
    "Concurrency": "tq_cloud.domain.flow_control",
    "RateLimit": "tq_cloud.domain.flow_control",
    "Debounce": "tq_cloud.domain.flow_control",
    "UnknownTaskTypeError": "tq_cloud.errors",
    "WorkerLifecycleProvider": "tq_cloud.ports.lifecycle",
}

__all__ = [
    "AsyncTaskManager",
    "AsyncTaskManagerOptions",
    "BatchReport",
    "BatchTaskExecutor",
    "BoundExecutor",
    "Clock",
    "ConsoleHealthProvider",
    "EntityRef",
    "ExecutorActions",
    "ExecutorHandle",
    "ExecutorOptions",
    "FlowConfig",
    "FlowLifecycleProvider",
    "FlowResults",
    "FlowStep",
    "HandlerSettings",
    "InvalidDelayError",
    "InvalidPayloadError",
    "JoinTarget",
    "LifecycleConfig",
    "ManualClock",
    "NonRetryableError",
    "Operations",
    "ProjectionConfig",
    "ResultNotKeptError",
    "SingleTaskExecutor",
    "SystemClock",
    "Task",
    "TaskCancelledError",
    "TaskFailedError",
    "TaskHandler",
    "TaskLifecycleProvider",
    "TaskPage",
    "TaskProgress",
    "TaskQuery",
    "TaskQueuesManager",
    "TaskStatus",
    "TaskTimeoutError",
    "Concurrency",
    "RateLimit",
    "Debounce",
    "UnknownTaskTypeError",
    "WorkerLifecycleProvider",
]

if TYPE_CHECKING:
    from tq_cloud.assembly.handler import BatchReport, TaskHandler
    from tq_cloud.asynctasks.manager import AsyncTaskManager, AsyncTaskManagerOptions
    from tq_cloud.clock import Clock, ManualClock, SystemClock
    from tq_cloud.core.actions import ExecutorActions
    from tq_cloud.core.emitter import LifecycleConfig
    from tq_cloud.core.executors import BatchTaskExecutor, ExecutorOptions, SingleTaskExecutor
    from tq_cloud.core.registry import TaskQueuesManager
    from tq_cloud.core.sending import BoundExecutor, ExecutorHandle
    from tq_cloud.core.settings import HandlerSettings
    from tq_cloud.domain.flow_control import Concurrency, Debounce, RateLimit
    from tq_cloud.domain.flows import FlowConfig, FlowResults, FlowStep
    from tq_cloud.domain.task import EntityRef, JoinTarget, Task, TaskProgress, TaskStatus
    from tq_cloud.errors import (
        InvalidDelayError,
        InvalidPayloadError,
        NonRetryableError,
        ResultNotKeptError,
        TaskCancelledError,
        TaskFailedError,
        TaskTimeoutError,
        UnknownTaskTypeError,
    )
    from tq_cloud.lifecycle.console import ConsoleHealthProvider
    from tq_cloud.operations import Operations
    from tq_cloud.ports.lifecycle import FlowLifecycleProvider, TaskLifecycleProvider, WorkerLifecycleProvider
    from tq_cloud.ports.storage import TaskPage, TaskQuery
    from tq_cloud.projections.sink import ProjectionConfig


__getattr__ = lazy_exports(__name__, _EXPORTS)
