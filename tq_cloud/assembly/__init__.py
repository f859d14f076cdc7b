"""Where a handler is put together: the engine's pipeline (`tq_cloud.core`) with the features
(flows, projections, lifecycle callbacks, schedules, flow control, async hand-off) plugged into
it as commit steps, built-in executors and admission. The one place that knows them all."""
