"""Flow control: concurrency and rate limits per key, debounce and ordered keys (options in
`tq_cloud.domain.flow_control`), held system-wide in small conditional-write items of the task store (see `state`)."""
