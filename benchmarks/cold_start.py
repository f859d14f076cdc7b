"""Import time of the worker Lambda's handler module in a fresh process, beside aiobotocore.

    python benchmarks/cold_start.py --runs 10             # this venv, bytecode compiled first
    python benchmarks/cold_start.py --runs 10 --package   # the package `sam build` makes (Makefile)

Prints the median wall time of a fresh interpreter importing: nothing; `aiobotocore.session`;
that plus pydantic with one constrained model (what any handler with typed payloads pays);
functions/worker/handler.py for the example app (`TQ_APP`: which imports the app and
builds the handler); the handler with aiobotocore (a cold start
pays both: the handler imports aiobotocore on its first invocation); and a SnapStart init (the
handler module with `AWS_LAMBDA_INITIALIZATION_TYPE=snap-start`, which also loads the SDK's
service models before the snapshot). Budget: tq-cloud's own share, the handler with aiobotocore
less aiobotocore with pydantic and one model (what any handler with typed payloads pays), is at
most 50 ms.

Both modes import from bytecode, as the deployed package does (see the Makefile): without it
every run would compile our modules from source while site-packages come precompiled.
`--package` builds the package for this machine's platform (needs PyPI) and imports from it
alone, with `-S` and no bytecode writes, like Lambda's read-only /var/task.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TYPED_APP = "from pydantic import BaseModel, Field\nclass Payload(BaseModel):\n    to: str = Field(min_length=1)\n"
HANDLER = f"import runpy\nrunpy.run_path({str(ROOT / 'functions' / 'worker' / 'handler.py')!r})"
"""What Lambda does with `Handler: handler.handler` in functions/worker/: runs that module."""
CASES = {
    "python alone": "pass",
    "aiobotocore.session": "import aiobotocore.session",
    "aiobotocore + pydantic model": "import aiobotocore.session\n" + TYPED_APP,
    "worker handler module": HANDLER,
    "handler + aiobotocore": f"{HANDLER}\nimport aiobotocore.session",
    "SnapStart init (snapshotted)": f"import os\nos.environ['AWS_LAMBDA_INITIALIZATION_TYPE'] = 'snap-start'\n{HANDLER}",
}


def build_package(into: Path) -> Path:
    """The layer the functions share, built by the Makefile; its python/ folder (Lambda's /opt/python)."""
    subprocess.run(["make", "-s", "build-TqCloudLayer", f"ARTIFACTS_DIR={into}", f"PYTHON={sys.executable}",
                    f"PLATFORM=manylinux2014_{platform.machine()}"], cwd=ROOT, check=True)
    return into / "python"


def interpreter(package: Path | None, pycache: Path) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ, TQ_APP="tq_cloud.examples.app:app")
    if package is not None:
        return [sys.executable, "-S"], env | {"PYTHONPATH": str(package), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return [sys.executable], env | {"PYTHONPYCACHEPREFIX": str(pycache)}


def median_ms(command: list[str], env: dict[str, str], cwd: Path, code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*command, "-c", code], cwd=cwd, env=env, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


SHARE = ("import time\nimport aiobotocore.session\n" + TYPED_APP
         + f"started = time.perf_counter()\n{HANDLER}\n"
         "print((time.perf_counter() - started) * 1000)")
"""tq-cloud's own share, timed inside one interpreter (a difference of two medians of whole
runs would carry the noise of both)."""


def median_share_ms(command: list[str], env: dict[str, str], cwd: Path, runs: int) -> float:
    return statistics.median(float(subprocess.run([*command, "-c", SHARE], cwd=cwd, env=env, check=True,
                                                  capture_output=True, text=True).stdout) for _ in range(runs))


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--package", action="store_true", help="measure the package the Makefile builds")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        package = build_package(Path(scratch, "layer")) if args.package else None
        command, env = interpreter(package, Path(scratch, "pycache"))
        cwd = package or ROOT
        for code in CASES.values():  # compiles this venv's bytecode once; warms the page cache
            subprocess.run([*command, "-c", code], cwd=cwd, env=env, check=True)
        results = {name: median_ms(command, env, cwd, code, args.runs) for name, code in CASES.items()}
        share = median_share_ms(command, env, cwd, args.runs)
    for name, ms in results.items():
        print(f"{name:<30}{ms:>8.0f} ms (median of {args.runs})")
    boto = results["aiobotocore.session"]
    typed = results["aiobotocore + pydantic model"]
    print(f"tq-cloud's own share of a cold start: {share:.0f} ms (median of {args.runs}: the worker handler's "
          f"import after aiobotocore with pydantic and one model, {typed:.0f} ms, of which pydantic "
          f"{typed - boto:.0f} ms) (budget <= 50 ms): {'met' if share <= 50 else 'NOT met'}")
    print(f"with SnapStart, init work done once before the snapshot: "
          f"{results['SnapStart init (snapshotted)'] - results['python alone']:.0f} ms (imports, the SDK's service "
          "models, the app's validators); a container restored from it pays none of it")
    return results | {"share": share}


if __name__ == "__main__":
    main()
