"""`metaprompt report DIR`: the literature's tables from the results `metaprompt run` wrote, and a figure."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..benchmark import load_results
from ..results import FORMATS, build_report, render, save_figure

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
    spread = p.add_mutually_exclusive_group()
    spread.add_argument("--no-std", action="store_true", help="means only, without the ± std over seeds")
    spread.add_argument("--ci95", action="store_true",
                        help="± the 95%% confidence interval of each mean over seeds (1.96 std / sqrt(seeds), as "
                             "CoOp's parse_test_res.py --ci95) instead of the std")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    report = build_report(load_results(args.dir), paper=args.paper)
    print(render(report.tables, args.format, std="ci95" if args.ci95 else not args.no_std), end="")
    figure = save_figure(report.panels, args.figure or Path(args.dir) / FIGURE_NAME)
    print(f"figure: {figure}", file=sys.stderr)
    return 0
