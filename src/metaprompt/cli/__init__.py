"""The ``metaprompt`` command. Each subcommand lives in a module of this package that defines
``add_parser(subparsers)``; the parser it adds sets ``func(args) -> int``."""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MetapromptError

COMMAND_MODULES = ["train", "eval", "predict", "data"]


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
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MetapromptError as err:
        print(f"metaprompt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("metaprompt: interrupted", file=sys.stderr)
        return 130
