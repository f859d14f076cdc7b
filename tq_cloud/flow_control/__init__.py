"""Flow control: concurrency and rate limits per key, debounce and ordered keys (see
`options`), held system-wide in small conditional-write items of the task store (see `state`)."""
