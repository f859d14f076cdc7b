"""A second, independent emulator of DynamoDB and Kinesis: dynalite and kinesalite (npm, in
tests/emulators, installed by .ci/run with `npm ci`), started on 127.0.0.1 at free ports. moto
accepts much that AWS refuses; another implementation of the same APIs catches what one
emulator forgives. `TQ_TEST_EMULATOR=dynalite` runs the suites that take `aws_target` on them
(SQS and EventBridge Scheduler stay on moto, which the other two do not serve)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tq_cloud.backends.aws import AwsSettings

HERE = Path(__file__).resolve().parent / "emulators"
CREATING_MS = 400
"""How long a new table or stream stays CREATING: as on AWS, nothing may use it before it is
ACTIVE, so the waiters of provisioning are exercised on every run."""


@dataclass(frozen=True)
class AwsTarget:
    """Where the AWS backends of a test go: moto's server for every service, or dynalite and
    kinesalite for DynamoDB and Kinesis with moto for the rest."""

    name: str
    endpoint: str
    dynamodb: str | None = None
    kinesis: str | None = None

    def settings(self, **overrides: Any) -> AwsSettings:
        from tests.aws_support import fresh_settings

        return fresh_settings(self.endpoint, dynamodb_endpoint_url=self.dynamodb, kinesis_endpoint_url=self.kinesis,
                              **overrides)

    def environment(self) -> dict[str, str]:
        """The TQ_* variables that send a process (the CLI, `tq-cloud dev`) to this target."""
        env = {"TQ_ENDPOINT_URL": self.endpoint}
        env |= {"TQ_DYNAMODB_ENDPOINT_URL": self.dynamodb} if self.dynamodb else {}
        env |= {"TQ_KINESIS_ENDPOINT_URL": self.kinesis} if self.kinesis else {}
        return env


def selected() -> str:
    name = os.environ.get("TQ_TEST_EMULATOR", "moto")
    if name not in ("moto", "dynalite"):
        raise ValueError(f"TQ_TEST_EMULATOR={name!r}: use moto (the default) or dynalite")
    return name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serving(port: int, process: subprocess.Popen[bytes], within: float = 20.0) -> None:
    """Until the port takes connections (the process polled, never a fixed sleep)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited ({process.returncode}): run `npm ci` in {HERE}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the emulator did not listen on port {port} within {within:.0f} s")


@contextmanager
def node_emulator(name: str, *args: str) -> Iterator[str]:
    binary = HERE / "node_modules" / ".bin" / name
    if not binary.exists():
        raise RuntimeError(f"{name} is not installed: run `npm ci --prefix {HERE}` (as .ci/run does)")
    port = _free_port()
    process = subprocess.Popen(["node", str(binary), "--port", str(port), *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _serving(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def dynalite_and_kinesalite() -> Iterator[tuple[str, str]]:
    with ExitStack() as stack:
        dynamodb = stack.enter_context(node_emulator("dynalite", "--host", "127.0.0.1",
                                                     "--createTableMs", str(CREATING_MS)))
        kinesis = stack.enter_context(node_emulator("kinesalite", "--createStreamMs", str(CREATING_MS),
                                                    "--shardLimit", "100000"))  # every test makes a stream of its own
        yield dynamodb, kinesis
