"""tq-cloud: a serverless Python task queue on AWS (Kinesis, DynamoDB, EventBridge)."""

from tq_cloud.asynctasks.manager import AsyncTaskManager, AsyncTaskManagerOptions
from tq_cloud.clock import Clock, ManualClock, SystemClock
from tq_cloud.core.actions import ExecutorActions
from tq_cloud.core.executors import (
    BatchTaskExecutor,
    ExecutorOptions,
    SingleTaskExecutor,
)
from tq_cloud.core.handler import BatchReport, TaskHandler
from tq_cloud.core.models import EntityRef, JoinTarget, Task, TaskStatus
from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.core.settings import HandlerSettings
from tq_cloud.flows.models import FlowConfig, FlowResults, FlowStep
from tq_cloud.lifecycle.console import ConsoleHealthProvider
from tq_cloud.lifecycle.emitter import LifecycleConfig
from tq_cloud.ports.lifecycle import (
    FlowLifecycleProvider,
    TaskLifecycleProvider,
    WorkerLifecycleProvider,
)
from tq_cloud.projections.sink import ProjectionConfig

__all__ = [
    "AsyncTaskManager",
    "AsyncTaskManagerOptions",
    "BatchReport",
    "BatchTaskExecutor",
    "Clock",
    "ConsoleHealthProvider",
    "EntityRef",
    "ExecutorActions",
    "ExecutorOptions",
    "FlowConfig",
    "FlowLifecycleProvider",
    "FlowResults",
    "FlowStep",
    "HandlerSettings",
    "JoinTarget",
    "LifecycleConfig",
    "ManualClock",
    "ProjectionConfig",
    "SingleTaskExecutor",
    "SystemClock",
    "Task",
    "TaskHandler",
    "TaskLifecycleProvider",
    "TaskQueuesManager",
    "TaskStatus",
    "WorkerLifecycleProvider",
]
