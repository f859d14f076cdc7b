"""Generic Lambda entry points: the worker and the sweeper of the app that `TQ_APP` names, so that
neither a template nor an app writes handler modules.

In template.yaml:

    Handler: tq_cloud.aws_lambda.entry.worker      # or tq_cloud.aws_lambda.entry.sweeper
    Environment:
      Variables:
        TQ_APP: myapp.tasks:app                    # module:attribute of a TaskQueuesManager

Lambda's runtime reads the attribute when the container initialises (PEP 562's module
`__getattr__` builds it then, once), so the app is imported at init, inside a SnapStart snapshot.
Writing your own module still works: `handler = kinesis_handler(app)`, with options of your own.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

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
    spec = os.environ.get(APP_VARIABLE)
    if not spec:
        raise ConfigurationError(f"{APP_VARIABLE} is not set: set it to your app as module:attribute "
                                 "(for example myapp.tasks:app)")
    return load_app(spec)


def __getattr__(name: str) -> Any:
    if name == "worker":
        from tq_cloud.aws_lambda.kinesis import kinesis_handler

        handler: Any = kinesis_handler(app_from_environment())
    elif name == "sweeper":
        from tq_cloud.aws_lambda.sweeper import sweeper_handler

        handler = sweeper_handler(app_from_environment())
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = handler
    return handler
