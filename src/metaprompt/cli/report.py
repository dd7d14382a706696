"""`metaprompt report DIR`: the literature's tables from the results `metaprompt run` wrote, and a figure."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..benchmark import load_results
from ..errors import MetapromptError
from ..reference import read_reference, write_reference
from ..results import FORMATS, build_report, reference_numbers, render, save_figure

FIGURE_NAME = "report.png"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="tabulate and plot protocol results",
        description="Read every result.json under DIR and print the literature's tables, methods side by side: "
                    "base-to-new (per dataset the mean and std over seeds of Base, New and HM, HM being the "
                    "harmonic mean of the mean Base and New; an Average row whose HM is the harmonic mean of the "
                    "averaged Base and New), domain generalisation (per target domain and their average, per "
                    "dataset, then a summary over datasets), cross-dataset transfer, few-shot classification (accuracy "
                    "against shots per dataset and on average) and what the runs cost. Writes a PNG figure comparing "
                    "the methods (few-shot: accuracy-against-shots curves).")
    p.add_argument("dir", metavar="DIR", help="a folder written by `metaprompt run --out` (searched recursively)")
    p.add_argument("--format", choices=FORMATS, default="md",
                   help="md: Markdown tables; csv: one long-format table (table, row, column, mean, std, seeds); "
                        "latex: booktabs tables (default: %(default)s)")
    p.add_argument("--figure", default=None, metavar="FILE.png",
                   help=f"where to write the figure (default: DIR/{FIGURE_NAME})")
    p.add_argument("--paper", action="store_true",
                   help="also put the published numbers (the MetaPrompt paper's base-to-new averages and domain-"
                        "generalisation table; KgCoOp's, VPT's and IVLP's averages from their repositories) beside "
                        "the measured ones, with the difference")
    p.add_argument("--reference", action="append", default=[], metavar="FILE.yaml",
                   help="also put this file's numbers (a paper's per-dataset table, or an earlier sweep's written by "
                        "--save-reference) beside the measured ones, per dataset, with the difference; the file "
                        "names its source (docs/protocols.md shows its form); repeatable")
    p.add_argument("--save-reference", default=None, metavar="FILE.yaml",
                   help="write the measured means (base-to-new, cross-dataset, domain generalisation) as a reference "
                        "file, for a later sweep's --reference")
    p.add_argument("--source", default=None, metavar="TEXT",
                   help="with --save-reference: where the numbers come from, written into the file (required)")
    spread = p.add_mutually_exclusive_group()
    spread.add_argument("--no-std", action="store_true", help="means only, without the ± std over seeds")
    spread.add_argument("--ci95", action="store_true",
                        help="± the 95%% confidence interval of each mean over seeds (1.96 std / sqrt(seeds), as "
                             "CoOp's parse_test_res.py --ci95) instead of the std")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    if args.source is not None and args.save_reference is None:
        raise MetapromptError("--source says where a saved reference's numbers come from: give it with "
                              "--save-reference FILE.yaml")
    if args.save_reference is not None and not (args.source or "").strip():
        raise MetapromptError("--save-reference needs --source TEXT: where the numbers come from, as one line")
    if args.save_reference is not None and Path(args.save_reference).exists():
        raise MetapromptError(f"--save-reference {args.save_reference} exists (it may hold numbers typed from a paper): "
                              "give a new file name, or delete it first")
    references = [read_reference(path) for path in args.reference]  # every file checked before any table
    results = load_results(args.dir)
    report = build_report(results, paper=args.paper, references=references, warn=warn)
    print(render(report.tables, args.format, std="ci95" if args.ci95 else not args.no_std), end="")
    figure = save_figure(report.panels, args.figure or Path(args.dir) / FIGURE_NAME)
    print(f"figure: {figure}", file=sys.stderr)
    if args.save_reference is not None:
        numbers, settings = reference_numbers(results, warn)
        path = write_reference(args.save_reference, args.source, numbers, settings, str(args.dir), __version__)
        print(f"reference: {path}", file=sys.stderr)
    return 0


def warn(line: str) -> None:
    print(f"metaprompt: warning: {line}", file=sys.stderr)
