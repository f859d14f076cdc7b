"""Recurring schedules: declared with `app.schedule(...)`, fired by EventBridge Scheduler on AWS
(and by the local runtime and the in-memory stack), each occurrence run exactly once."""
