"""`metaprompt demo`: the whole pipeline on the offline world, in minutes, with no download."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..config import resolve
from ..protocols import Runtime, run_base2new, run_dg
from ..results import build_report, load_results, render, save_figure
from ..world import DOMAINS
from ..world.render import render_world
from .common import compute_options, device_of

DEMO_METHODS = ("zeroshot", "coop", "ivlp", "metaprompt")
WORLD_SIZES = {"train_per_class": 16, "test_per_class": 25, "val_per_class": 4}
"""Images per class and domain of the demo's world: enough for 16-shot base-to-new and few-shot DG, and
750 test images per half of the classes, so that one image moves an accuracy by 0.13 points."""
FIGURE_NAME = "demo.png"
LABEL = ("Numbers on the offline world (procedurally rendered shapes, a tiny CLIP pretrained by "
         "`metaprompt world pretrain`): they show the pipeline and the methods' behaviour, not paper numbers.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="run base-to-new and domain generalisation on the offline world",
        description="Render the offline world (cached), then run base-to-new generalisation and domain "
                    "generalisation (leave one domain out) on it with zero-shot CLIP, CoOp, IVLP and MetaPrompt "
                    "using the shipped tiny CLIP (world-tiny), print the tables (domain generalisation also on the source "
                    "domains, to show the held-out-domain gap) and write a PNG figure. "
                    "Re-running resumes and skips what is finished.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="metaprompt-demo", help="folder for the world, the runs and the figure")
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=DEMO_METHODS, help="methods to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds of each run")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--progress", action="store_true", help="progress bars inside each run (training epochs, evaluation) instead of one bar over the runs")
    p.set_defaults(func=run, reference_compute=False, class_chunk=0, text_checkpointing=False, no_progress=False)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    data = out / "data"
    render_world(data / "world", **WORLD_SIZES)
    runs = len(args.methods) * len(args.seeds) * (1 + len(DOMAINS))
    with tqdm(total=runs, desc="demo runs", unit="run", disable=args.progress) as bar:
        runtime = Runtime(device=device_of(args), options=compute_options(args), progress=args.progress,
                          log=lambda line: (bar.write(line), bar.update()))
        for method in args.methods:
            cfg = resolve(preset=f"world_{method}_b2n")
            run_base2new(cfg, ["world"], args.seeds, data, out / "runs", runtime)
        for method in args.methods:
            cfg = resolve(preset=f"world_{method}_dg")
            run_dg(cfg, "world_dg", args.seeds, data, out / "runs", runtime, source_accuracy=True)
    report = build_report(load_results(out / "runs"))
    print()
    print(LABEL)
    print()
    print(render(report.tables, "md"), end="")
    figure = save_figure(report.panels, out / FIGURE_NAME)
    print(f"\nfigure: {figure}\nruns: {out / 'runs'} (tabulate again with `metaprompt report {out / 'runs'}`)\n"
          f"demo finished in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0
