"""Finding the app a deployed function serves: `TQ_APP` names it as `module:attribute` (the
template's AppSpec parameter), so one template and one `functions/` folder serve any app, and the
CLI finds the same app the same way.

In functions/worker/handler.py (template.yaml's WorkerFunction: `Handler: handler.handler`):

    from tq_cloud.aws_lambda import app_from_environment, kinesis_handler

    handler = kinesis_handler(app_from_environment())

The module is imported when the container initialises, so the app is imported and the handler
built at init, inside a SnapStart snapshot.
"""

from __future__ import annotations

import importlib
import os

from tq_cloud.core.registry import TaskQueuesManager
from tq_cloud.errors import ConfigurationError

APP_VARIABLE = "TQ_APP"


def load_app(spec: str) -> TaskQueuesManager:
    """The TaskQueuesManager that `module:attribute` names.

    Example:
        app = load_app("myapp.tasks:app")
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{spec!r}: name the app as module:attribute, for example myapp.tasks:app")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigurationError(f"{spec!r}: no module {exc.name!r} on the path; run from the folder that "
                                     "holds it, or install it") from exc
        raise
    app = getattr(module, attribute, None)
    if not isinstance(app, TaskQueuesManager):
        raise ConfigurationError(f"{spec!r}: {module_name}.{attribute} is "
                                 f"{'missing' if app is None else type(app).__name__}, not a TaskQueuesManager")
    return app


def app_from_environment() -> TaskQueuesManager:
    """The app `TQ_APP` names (`module:attribute`), or ConfigurationError saying what to set.

    Example:
        handler = kinesis_handler(app_from_environment())   # functions/worker/handler.py
    """
    spec = os.environ.get(APP_VARIABLE)
    if not spec:
        raise ConfigurationError(f"{APP_VARIABLE} is not set: set it to your app as module:attribute "
                                 "(for example myapp.tasks:app)")
    return load_app(spec)
