"""moto's server on 127.0.0.1 at a free port, for the lifetime of a `with` block.

Requests are served one at a time. moto's handlers are not atomic: two threads running the
same conditional write can both see the condition hold, where DynamoDB lets exactly one
succeed, and tq-cloud's claims and set-if-absent inserts depend on that guarantee. Serving
requests under one lock restores it (the GIL already kept them from running in parallel).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@contextmanager
def moto_server(*, own_process: bool = False) -> Iterator[str]:
    """In this process by default; `own_process` runs it in a child process instead, so that
    moto's request handling (the heaviest part of a long local run) gets its own interpreter
    and core rather than sharing this one's GIL with the code under test, and so that the
    child can be tended for a long run (see `_tend`)."""
    for name, value in (("AWS_ACCESS_KEY_ID", "local"), ("AWS_SECRET_ACCESS_KEY", "local")):
        os.environ.setdefault(name, value)
    if own_process:
        with _child_server() as endpoint:
            yield endpoint
        return
    server = _make_server(0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        thread.join()


def _serialized(app: WsgiApp, lock: threading.Lock) -> WsgiApp:
    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            return app(environ, start_response)

    return serve


def _make_server(port: int, lock: threading.Lock | None = None) -> Any:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no log line per request
    app = _serialized(DomainDispatcherApplication(create_backend_app), lock or threading.Lock())
    return make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


def _tend(parent: int, lock: threading.Lock) -> None:
    """For a long run in a child process: every few seconds, drop moto's record of every model
    instance it ever made (kept only for its dashboard: each item copy a scan, query or update
    makes would otherwise live for ever, and the growing heap slows every garbage collection);
    exit once the parent is gone (a parent killed outright runs no cleanup)."""
    from moto.core.model_instances import reset_model_data

    while os.getppid() == parent:
        time.sleep(2)
        with lock:  # never in the middle of a request
            reset_model_data()
    os._exit(0)


@contextmanager
def _child_server(start_timeout: float = 30.0) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    child = subprocess.Popen([sys.executable, "-m", "tq_cloud.local.moto", str(port), str(os.getpid())],
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


if __name__ == "__main__":  # the child of moto_server(own_process=True): PORT PARENT_PID
    requests = threading.Lock()
    threading.Thread(target=_tend, args=(int(sys.argv[2]), requests), daemon=True).start()
    _make_server(int(sys.argv[1]), requests).serve_forever()
