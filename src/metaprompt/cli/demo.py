"""`metaprompt demo`: the whole pipeline on the offline world, in minutes, with no download.

The demo's runs are independent, so on a CPU they run side by side in worker processes, one per core and
one torch thread each (tiny models gain nothing from a second thread: it mostly waits). Zero-shot CLIP
and CoOp base-to-new run first, and their table is printed as soon as both are done; every table is
printed again, complete, at the end.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from ..config import RunConfig, resolve
from ..world.domains import DOMAINS
from ..world.render import render_world
from .common import HelpFormatter, add_device_arg, device_of

DEMO_METHODS = ("zeroshot", "coop", "ivlp", "metaprompt")
FIRST_RESULTS = ("zeroshot", "coop")
"""Base-to-new runs that go first; their table is printed as soon as they are done."""
HEAVIEST_FIRST = ("metaprompt", "ivlp", "coop", "zeroshot")
"""The other runs start in this order (per-run time measured on the demo's world, longest first), which
keeps the worker processes busy until the end."""
MAX_PROCESSES = 8
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
                    "domains, to show the held-out-domain gap) and write a PNG figure. The zero-shot and CoOp "
                    "base-to-new table comes first, as soon as those two runs are done. "
                    "Re-running resumes and skips what is finished.",
        formatter_class=HelpFormatter)
    p.add_argument("--out", default="metaprompt-demo", help="folder for the world, the runs and the figure")
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=DEMO_METHODS, help="methods to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds of each run")
    add_device_arg(p)
    p.add_argument("--processes", type=int, default=None,
                   help="runs side by side, in worker processes of one torch thread each (default: one per CPU "
                        f"core, at most {MAX_PROCESSES}, on a CPU; 1 on a GPU, which runs them in this process)")
    p.add_argument("--progress", action="store_true", help="progress bars inside each run (training epochs, evaluation) instead of one bar over the runs")
    p.set_defaults(func=command)


@dataclass(frozen=True)
class DemoRun:
    """One run of the demo: a protocol, a method's world preset and, for domain generalisation, a target."""

    protocol: str
    method: str
    cfg: RunConfig
    target: str | None = None

    @property
    def first(self) -> bool:
        return self.protocol == "base2new" and self.method in FIRST_RESULTS


def demo_runs(methods: list[str]) -> list[DemoRun]:
    """The demo's runs in the order they start: the first results, then the heaviest runs first."""
    runs = [DemoRun("base2new", m, resolve(preset=f"world_{m}_b2n")) for m in methods]
    for m in methods:
        cfg = resolve(preset=f"world_{m}_dg")
        runs += [DemoRun("dg", m, cfg, target) for target in DOMAINS]
    def start_order(r: DemoRun) -> tuple:
        if r.first:
            return (0, FIRST_RESULTS.index(r.method))
        return (1, HEAVIEST_FIRST.index(r.method), r.protocol != "base2new")

    return sorted(runs, key=start_order)


def execute(run: DemoRun, data: Path, results: Path, seeds: list[int], device: str, threads: int) -> list[str]:
    """Run one demo run (its sweep over seeds) and return its log lines. ``threads`` > 0 sets torch's
    thread count (in a worker process)."""
    import torch

    from ..protocols import Runtime, run_base2new, run_dg

    if threads:
        torch.set_num_threads(threads)
    lines: list[str] = []
    runtime = Runtime(device=device, progress=None, log=lines.append)  # quiet: no bars, no epoch lines
    if run.protocol == "base2new":
        run_base2new(run.cfg, ["world"], seeds, data, results, runtime)
    else:
        run_dg(run.cfg, "world_dg", seeds, data, results, runtime, targets=[run.target], source_accuracy=True)
    return [re.sub(r"^\[\d+/\d+\] ", "", line) for line in lines]


def completed(runs: list[DemoRun], processes: int, *args) -> Iterator[tuple[int, list[str]]]:
    """(index of a run in ``runs``, its log lines) as runs finish: in this process one after another, or in
    ``processes`` worker processes (spawned: they start clean, without this process's threads)."""
    if processes <= 1:
        for index, r in enumerate(runs):
            yield index, execute(r, *args, 0)
        return
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(execute, r, *args, 1): index for index, r in enumerate(runs)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def default_processes(device: str, runs: int) -> int:
    if device != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_PROCESSES, runs))


def command(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = Path(args.out)
    data, results = out / "data", out / "runs"
    device = device_of(args)
    runs = demo_runs(args.methods)
    processes = args.processes or default_processes(device, len(runs))
    render_world(data / "world", **WORLD_SIZES, processes=processes)
    waiting_for_first = {index for index, r in enumerate(runs) if r.first}
    with tqdm(total=len(runs) * len(args.seeds), desc="demo runs", unit="run", disable=args.progress) as bar:
        for finished, lines in completed(runs, processes, data, results, args.seeds, device):
            for line in lines:
                bar.write(line)
            bar.update(len(args.seeds))
            if finished in waiting_for_first:
                waiting_for_first.discard(finished)
                if not waiting_for_first:
                    bar.write(first_results(results, time.perf_counter() - start))
    print_report(results, out)
    print(f"demo finished in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


def first_results(results: Path, seconds: float) -> str:
    from ..benchmark import load_results
    from ..results import build_report, render

    tables = [t for t in build_report(load_results(results)).tables if t.title.startswith("Base-to-new")]
    return (f"\nfirst results, after {seconds:.0f} s (the other runs go on; every table follows at the end):\n\n"
            + render(tables, "md"))


def print_report(results: Path, out: Path) -> None:
    from ..benchmark import load_results
    from ..results import build_report, render, save_figure

    report = build_report(load_results(results))
    print()
    print(LABEL)
    print()
    print(render(report.tables, "md"), end="")
    figure = save_figure(report.panels, out / FIGURE_NAME)
    print(f"\nfigure: {figure}\nruns: {results} (tabulate again with `metaprompt report {results}`)", file=sys.stderr)
