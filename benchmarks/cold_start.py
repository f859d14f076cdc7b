"""Import time of the worker Lambda's handler module in a fresh process, beside aiobotocore.

    python benchmarks/cold_start.py --runs 10

Prints the median wall time of `import functions.worker.app` (which builds the handler), of
`import aiobotocore.session` alone, and of both together (a cold start pays both: the handler
imports aiobotocore on its first invocation). Target: the handler adds at most 60 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "python alone": "pass",
    "aiobotocore.session": "import aiobotocore.session",
    "worker handler module": "import functions.worker.app",
    "handler + aiobotocore": "import functions.worker.app, aiobotocore.session",
}


def median_ms(code: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    results = {name: median_ms(code, args.runs) for name, code in CASES.items()}
    for name, ms in results.items():
        print(f"{name:<24}{ms:>8.0f} ms (median of {args.runs})")
    added = results["handler + aiobotocore"] - results["aiobotocore.session"]
    print(f"the handler adds {added:.0f} ms to aiobotocore alone (target <= 60 ms): "
          f"{'met' if added <= 60 else 'NOT met'}")
    return results


if __name__ == "__main__":
    main()
