"""The web console: `tq-cloud console`, and started by `tq-cloud dev` (see app.py)."""
