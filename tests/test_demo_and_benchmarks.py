"""The README's demo and the benchmarks run (on tiny input for the benchmarks)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tq_cloud import TaskStatus
from tq_cloud.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


async def test_demo_drives_every_path_to_a_terminal_state() -> None:
    out = io.StringIO()
    stack = await run_demo(out)
    text = out.getvalue()
    rows = stack.storage.snapshot().values()
    assert {r.status for r in rows} <= {TaskStatus.EXECUTED, TaskStatus.FAILED, TaskStatus.IGNORED}
    assert "flow join 'ship' result: {'shipped': ['A', 'B', 'C']}" in text
    assert "exhausted 'charge': card declined after 2 attempts" in text
    assert "order:o-42 ship     executed" in text
    assert stack.queue.depth() == 0 and stack.next_due() is None


def test_cli_demo_runs_in_a_fresh_process() -> None:
    result = subprocess.run([sys.executable, "-m", "tq_cloud", "demo"], capture_output=True, text=True,
                            timeout=60, check=True)
    assert "tq-cloud in-memory demo" in result.stdout


def test_runner_throughput_benchmark_runs_on_tiny_input(capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import runner_throughput
    finally:
        sys.path.pop(0)
    figures = runner_throughput.main(["--tasks", "300", "--batch-size", "50"])
    assert {f.kind for f in figures} == {"single", "parallel", "batch"} and len(figures) == 6
    assert all(f.tasks == 300 and f.process_rate > 0 for f in figures)
    assert re.search(r"^json end to end: [\d,]+ tasks/s \(add_tasks alone: [\d,]+ tasks/s\)$",
                     capsys.readouterr().out, re.M)


def test_flow_fanout_benchmark_runs_on_tiny_input() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "flow_fanout.py"), "--backend", "aws",
                             "--steps", "250", "--batch-size", "50"], capture_output=True, text=True, timeout=300,
                            check=True)
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"steps 250: ([\d.]+) calls/step, ([\d.]+) RRU/step, ([\d.]+) WRU/step, join after \d+ ms",
                         last)
    assert match, last
    calls, rru, wru = map(float, match.groups())
    assert 0 < calls <= 0.5 and 0 < rru <= 0.5 and 0 < wru <= 0.5, "steps reported in batches of 50 are packed"


def test_aws_calls_benchmark_runs_on_tiny_input() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "aws_calls.py"), "--tasks", "200"],
                            capture_output=True, text=True, timeout=300, check=True)
    assert "all engine calls" in result.stdout and "0.0000 DynamoDB calls per task" in result.stdout
    assert re.search(r"^kinesis records per task: \d+\.\d+ ", result.stdout, re.M)
    assert re.fullmatch(r"estimated cost per million tasks: \$\d+\.\d{3} .*", result.stdout.strip().splitlines()[-1])


def test_lambda_cpu_benchmark_runs_on_tiny_input() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lambda_cpu.py"), "--records", "4",
                             "--per-record", "5", "--events", "2"], capture_output=True, text=True, timeout=300, check=True)
    assert "40 no-op tasks" in result.stdout
    assert re.search(r"^lambda cpu per task: \d+\.\d us", result.stdout, re.M)


def test_soak_benchmark_runs_briefly() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--rate", "20", "--seconds", "4"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "memory bounded: True" in result.stdout and "max iterator age" in result.stdout


def test_cold_start_benchmark_runs_once() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cold_start.py"), "--runs", "1"],
                            capture_output=True, text=True, timeout=300, check=True)
    assert "handler + aiobotocore" in result.stdout and "tq-cloud's own share of a cold start" in result.stdout
    assert "with SnapStart, init work done once before the snapshot" in result.stdout


def test_delay_latency_benchmark_runs_on_tiny_input() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "delay_latency.py"), "--tasks", "300"],
                            capture_output=True, text=True, timeout=300, check=True)
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"lateness p50 [\d.]+ s, p99 [\d.]+ s, max [\d.]+ s over \d+ tasks", last), last
