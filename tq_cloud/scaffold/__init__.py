"""`tq-cloud new NAME`: a project of your own, as `sam init` makes one: an app module with example
executors, tests on InMemoryStack, `functions/` (one module per deployed function), the template,
the build files, samconfig and a README.

The template, the functions, the Makefile and samconfig.toml are the repository's own (this
folder links them, and the wheel carries copies), with only the app's name put in: what the
scaffold deploys is what this repository's tests run.

Example:
    project = create_project("billing", Path.cwd())   # ./billing, with billing/tasks.py
"""

from __future__ import annotations

import keyword
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tq_cloud.errors import ConfigurationError

HERE = Path(__file__).resolve().parent
EXAMPLE_APP = "tq_cloud.examples.app:app"
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
TAKEN = {"tq_cloud", "tests", "functions", "pydantic", "aioboto3", "botocore", "boto3", "croniter", "handler"}
"""Package names the project's own code or its requirements already use."""


def _package_version() -> str:
    try:
        return version("tq-cloud")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0.1.0"


def _shared(file: str, replacements: dict[str, str]) -> str:
    text = (HERE / file).read_text()
    for old, new in replacements.items():
        if old not in text:
            raise RuntimeError(f"the scaffold's {file} no longer contains {old!r}: update tq_cloud/scaffold")
        text = text.replace(old, new)
    return text


def project_files(name: str) -> dict[str, str]:
    """Each file of the project, by its path inside the project folder."""
    stack = name.replace("_", "-")
    rendered = {path: (HERE / "files" / template).read_text().replace("{{name}}", name)
                .replace("{{version}}", _package_version())
                for path, template in {
                    f"{name}/__init__.py": "init.py.tmpl", f"{name}/tasks.py": "tasks.py.tmpl",
                    "tests/test_tasks.py": "test_tasks.py.tmpl", "pyproject.toml": "pyproject.toml.tmpl",
                    "requirements.txt": "requirements.txt.tmpl", "README.md": "README.md.tmpl",
                    ".gitignore": "gitignore.tmpl", "functions/worker/handler.py": "worker_handler.py.tmpl",
                    "functions/sweeper/handler.py": "sweeper_handler.py.tmpl"}.items()}
    rendered["template.yaml"] = _shared("template.yaml", {
        f"Default: {EXAMPLE_APP}": f"Default: {name}.tasks:app",
        "Description: tq-cloud - a serverless task queue": f"Description: {name} - tasks on tq-cloud"})
    rendered["Makefile"] = _shared("Makefile", {"PACKAGES ?= tq_cloud": f"PACKAGES ?= {name}"})
    rendered["samconfig.toml"] = _shared("samconfig.toml", {'stack_name = "tq-cloud"': f'stack_name = "{stack}"'})
    return rendered


def create_project(name: str, parent: Path) -> Path:
    """Write the project `name` into a new folder `parent / name`; its path."""
    if not NAME.fullmatch(name):
        raise ConfigurationError(f"{name!r}: name the project with a lowercase letter, then up to 39 lowercase "
                                 "letters, digits or '_' (it is also the app's Python package)")
    if keyword.iskeyword(name) or name in sys.stdlib_module_names or name in TAKEN:
        raise ConfigurationError(f"{name!r} is a Python keyword or the name of a module the project imports "
                                 f"(`import {name}` would not reach your app): choose another name, e.g. {name}_app")
    folder = parent / name
    if folder.exists():
        raise ConfigurationError(f"{folder} already exists: choose another name or remove it")
    for path, text in project_files(name).items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return folder
