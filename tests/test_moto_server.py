"""moto's server in its own process: it serves, and it does not outlive a parent killed outright."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARENT = """
import os, sys
from tq_cloud.local.moto import moto_server
with moto_server(own_process=True) as endpoint:
    print(endpoint, flush=True)
    sys.stdin.readline()
    os.kill(os.getpid(), 9)
"""


def answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
        return True
    except OSError:
        return False


def test_the_child_server_serves_and_exits_with_its_killed_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None and parent.stdin is not None
    endpoint = parent.stdout.readline().strip()
    assert endpoint.startswith("http://127.0.0.1:") and answers(endpoint)
    parent.stdin.write("go\n")
    parent.stdin.flush()
    assert parent.wait(timeout=30) == -9
    deadline = time.monotonic() + 20
    while answers(endpoint) and time.monotonic() < deadline:
        time.sleep(0.2)  # waiting on another process's exit; nothing to await
    assert not answers(endpoint), "the orphaned server is still serving"
