"""The ``metaprompt`` command. Each subcommand lives in a module of this package that defines
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int`` (the module's ``command``).

Building the parser imports no torch: each command imports what it runs inside its function, so that
``--help`` and ``metaprompt report`` start in a fraction of a second."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import runlog
from ..errors import MetapromptError, PeerError
from .common import resolve_datasets

COMMAND_MODULES = ["train", "config", "eval", "predict", "export", "interpret", "import_checkpoint", "data", "run", "report", "world", "demo"]
DEBUG_ENV = "METAPROMPT_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metaprompt",
        description="Learn prompts for CLIP-like models (MetaPrompt and the field's baselines), "
                    "evaluate them, and reproduce the field's benchmark protocols.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. Any error ends it with one line on stderr and a non-zero exit code (a traceback
    only when the environment sets METAPROMPT_DEBUG=1)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    runlog.command_line[:] = ["metaprompt", *argv]
    args.argv = argv  # the command line as given (`run --gpus` starts workers with it)
    try:
        resolve_datasets(args)
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as err:
        if os.environ.get(DEBUG_ENV):
            raise
        message, code = explain(err)
        if not (isinstance(err, PeerError) and os.environ.get("RANK", "0") != "0"):
            # the process that failed prints its own error, in one write: processes share the stream
            sys.stderr.write(f"metaprompt: {message}\n")
            sys.stderr.flush()
        return code


def explain(err: BaseException) -> tuple[str, int]:
    """One line describing ``err``, and the exit code: 2 for bad input, 130 when interrupted, 1 for a bug."""
    if isinstance(err, MetapromptError):
        return "error: " + " ".join(str(err).split()), 2
    if isinstance(err, KeyboardInterrupt):
        return "interrupted" + (f": {err}" if err.args else ""), 130
    lines = str(err).strip().splitlines()
    detail = f": {lines[0]}" if lines else ""
    return (f"unexpected error ({type(err).__name__}{detail}); please report it. "
            f"Rerun with {DEBUG_ENV}=1 to see the traceback"), 1
