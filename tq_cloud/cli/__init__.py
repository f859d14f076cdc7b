"""The `tq-cloud` command: `new` (scaffold a project), `dev` (the local AWS runtime), `enqueue`,
`status`, `tasks`, `flows`, `redrive`, `console`, `demo` (in memory).

Every error is one line on stderr that says what to do, never a traceback: argparse's usage
errors, settings that name nothing, missing credentials, an endpoint that does not answer.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from tq_cloud.cli import dev, operate


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors in one line (no usage block above them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog.split()[0]} --help)\n")


def build_parser() -> OneLineParser:
    """The `tq-cloud` command's parser (its defaults read the environment and the current folder)."""
    parser = OneLineParser(prog="tq-cloud", description="tq-cloud task queue tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the in-memory demo (no AWS needed)")
    demo.set_defaults(run=_demo)
    dev.add_commands(commands, _app_name_option)
    operate.add_commands(commands, _app_name_option)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    from tq_cloud.local.terminal import SafeTerminal

    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = SafeTerminal(streams[0]), SafeTerminal(streams[1])  # task data never drives the terminal
    try:
        return _run(parser, argv)
    except BrokenPipeError:  # `tq-cloud ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), streams[0].fileno())  # so the flush at exit is silent
        return 0
    finally:
        sys.stdout, sys.stderr = streams


def _run(parser: OneLineParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    warn_unknown_settings(os.environ, sys.stderr.write)
    if getattr(args, "app_name", None):
        os.environ["TQ_APP_NAME"] = args.app_name
    if getattr(args, "endpoint_url", None) or os.environ.get("TQ_ENDPOINT_URL"):
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # a local AWS takes any credentials
            os.environ.setdefault(name, "local")
    try:
        result: int = args.run(args)
        return result
    except Exception as exc:
        line = one_line_error(exc)
        if line is None:
            raise
        print(f"tq-cloud {args.command}: {line}", file=sys.stderr)
        return 1


def _demo(args: argparse.Namespace) -> int:
    from tq_cloud.demo import main as demo

    demo()
    return 0


def one_line_error(exc: BaseException) -> str | None:
    """What to tell the user for an error they can fix; None for a bug (shown as a traceback)."""
    from tq_cloud.errors import ConfigurationError

    if isinstance(exc, ConfigurationError | operate.UsageError):
        return str(exc)
    name = type(exc).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("no AWS credentials: set AWS_PROFILE (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), "
                "or give --endpoint-url for a local AWS")
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    if code in ("ResourceNotFoundException", "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"):
        from tq_cloud.backends.aws import AwsSettings

        names = AwsSettings()
        return (f"{code}: {str(exc).split(': ', 1)[-1]} (tasks table {names.tasks_table}, stream {names.stream_name}): "
                "set the TQ_* variables from the stack's TqEnvironment output, or --app-name, or run "
                "`tq-cloud dev` first")
    if code in ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException",
                "AccessDeniedException"):
        return f"{code}: {str(exc).split(': ', 1)[-1]}: check the AWS credentials and their permissions"
    return None


KNOWN_SETTINGS = {"TQ_APP"}


def warn_unknown_settings(environ: dict[str, str] | os._Environ[str], write: Callable[[str], Any]) -> list[str]:
    """A TQ_* variable that is no setting is most likely a typo: say so, with the nearest name."""
    from tq_cloud.backends.aws.settings import AwsSettings

    known = KNOWN_SETTINGS | {f"TQ_{name.upper()}" for name in AwsSettings.model_fields}
    unknown = sorted(name for name in environ if name.startswith("TQ_") and name not in known)
    for name in unknown:
        near = difflib.get_close_matches(name, sorted(known), n=1)
        write(f"tq-cloud: warning: {name} is not a tq-cloud setting"
              f"{f' (did you mean {near[0]}?)' if near else ''}; it is ignored\n")
    return unknown


def _app_name_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app-name", type=_app_name,
                        default=os.environ.get("TQ_APP_NAME") or _folder_app_name(Path.cwd()),
                        help="names the resources that TQ_* variables do not name one by one: "
                             "APP-tasks, APP-flow-barriers, ... (default: TQ_APP_NAME, else this folder's name)")


def _app_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", value):
        raise argparse.ArgumentTypeError(f"{value!r}: use 1 to 40 letters, digits, '-', '_' or '.'")
    return value


def _folder_app_name(folder: Path) -> str:
    from tq_cloud.backends.aws.settings import folder_app_name

    return folder_app_name(folder)
