"""moto's server on 127.0.0.1 at a free port, for the lifetime of a `with` block."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def moto_server(*, own_process: bool = False) -> Iterator[str]:
    """In this process by default; `own_process` runs it in a child process instead, so that
    moto's request handling (the heaviest part of a long local run) gets its own interpreter
    and core rather than sharing this one's GIL with the code under test, and so that the
    child can be tended for a long run (see _LONG_RUNNING_SERVER)."""
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
        os.environ.setdefault(name, value)
    if own_process:
        with _child_server() as endpoint:
            yield endpoint
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


# moto's server for long runs: without a log line per request; dropping, every few seconds, its
# record of every model instance ever made (kept only for moto's dashboard: each item copy a
# scan, query or update makes would otherwise live for ever, and the growing heap slows every
# garbage collection); exiting when its parent dies (a parent killed outright runs no cleanup)
_LONG_RUNNING_SERVER = """
import logging, os, sys, threading, time
from moto.core.model_instances import reset_model_data
logging.getLogger("werkzeug").setLevel(logging.ERROR)
parent = os.getppid()
def tend():
    while os.getppid() == parent:
        time.sleep(2)
        reset_model_data()
    os._exit(0)
threading.Thread(target=tend, daemon=True).start()
from moto.server import main
main(sys.argv[1:])
"""


@contextmanager
def _child_server(start_timeout: float = 30.0) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    child = subprocess.Popen([sys.executable, "-c", _LONG_RUNNING_SERVER, "-H", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()  # loopback only
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not start on {endpoint}") from None
                time.sleep(0.1)  # polling a child process's readiness, outside any event loop
        yield endpoint
    finally:
        child.terminate()
        child.wait(timeout=10)
