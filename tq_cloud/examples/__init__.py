"""The example application (`app.py`) and a workload that takes every path through it
(`workload.py`): what `tq-cloud dev --demo` runs and what the repository's template.yaml deploys
(`TQ_APP=tq_cloud.examples.app:app`)."""
