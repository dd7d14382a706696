"""`metaprompt run base2new|dg|xd`: the field's benchmark protocols, one command each, resuming."""
from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

from ..benchmark import BASE_TO_NEW_DATASETS, CROSS_DATASET_TARGETS, DG_DOMAINS
from ..config import protocol_preset
from .common import add_config_args, add_runtime_args, compute_options, run_config, start_runtime

if TYPE_CHECKING:
    from ..protocols import Runtime

LAYOUT = {
    "base2new": "OUT/base2new/NAME/DATASET/seedK/",
    "dg": "OUT/dg/NAME/DATASET/shotsK/TARGET/seedK/",
    "xd": "OUT/xd/NAME/SOURCE/DATASET/seedK/ (DATASET = SOURCE: the training run)",
}
COMMON = ("Each run gets a folder of its own, {layout}, holding result.json (metrics, seed, dataset, method, "
          "versions, wall time) and, when it trains, its resolved config.yaml and artifact prompts.safetensors. "
          "Re-running the same command skips finished runs (those with a result.json) and resumes unfinished ones. "
          "Tabulate with `metaprompt report OUT`.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a benchmark protocol (base-to-new, domain generalisation, cross-dataset)",
        description="Run one of the field's benchmark protocols for one method over datasets and seeds, "
                    "one run after another, skipping what is finished.")
    protocols = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)

    b2n = _protocol_parser(
        protocols, "base2new", "base-to-new generalisation",
        "Per dataset and seed: train on the base classes (the first half of the sorted labels), then test the "
        "base test images over the base classes and the new test images over the new classes; the summary is "
        "the harmonic mean HM = 2*Base*New/(Base+New).")
    b2n.add_argument("--datasets", nargs="+", default=["all"], metavar="NAME",
                     help=f"datasets, or all = {' '.join(BASE_TO_NEW_DATASETS)}")
    b2n.set_defaults(func=run_base2new_command)

    dg = _protocol_parser(
        protocols, "dg", "domain generalisation (leave one domain out)",
        "For each target domain in turn: train on --shots images per class per source domain (the other "
        "domains), test on the target domain. MetaPrompt starts from its preset metaprompt_dg, the other "
        "methods from their default preset.", preset_default="metaprompt_dg for metaprompt, else the method's")
    dg.add_argument("--dataset", required=True, metavar="NAME", help=f"one of: {', '.join(DG_DOMAINS)}")
    dg.add_argument("--shots", type=int, required=True, help="training images per class per source domain (1 or 5)")
    dg.add_argument("--targets", nargs="+", default=None, metavar="DOMAIN",
                    help="target domains (default: every domain of the dataset)")
    dg.add_argument("--source-accuracy", action="store_true",
                    help="also test each run on its source domains' test images (not its training shots), "
                         "reported as `source` beside the held-out domain's accuracy")
    dg.set_defaults(func=run_dg_command)

    xd = _protocol_parser(
        protocols, "xd", "cross-dataset transfer",
        "Per seed: train once on the source dataset (all classes, the preset's shots: 16), then test that "
        "artifact on each target dataset's test split over the target's own classes. MaPLe starts from its "
        "released cross-dataset config (preset maple_xd); CoOp trains 50 epochs on ImageNet, as released.",
        preset_default="maple_xd for maple, else the method's")
    xd.add_argument("--source", default="imagenet", help="the dataset to train on (default: imagenet)")
    xd.add_argument("--targets", nargs="+", default=["all"], metavar="NAME",
                    help=f"target datasets, or all = {' '.join(CROSS_DATASET_TARGETS)} (without the source)")
    xd.set_defaults(func=run_xd_command)


def _protocol_parser(protocols: argparse._SubParsersAction, name: str, title: str, description: str,
                     preset_default: str = "the method's base-to-new preset") -> argparse.ArgumentParser:
    p = protocols.add_parser(name, help=title, description=f"{description} {COMMON.format(layout=LAYOUT[name])}")
    add_config_args(p, preset_default)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds, one run each (default: 1 2 3)")
    p.add_argument("--root", required=True, help="data root: the folder holding the dataset folders ($DATA)")
    p.add_argument("--out", required=True, help="results folder (one sub-folder per run)")
    p.add_argument("--name", default=None,
                   help="the method's name in folders and tables (default: the method), to compare variants")
    add_runtime_args(p)
    return p


def runtime_of(args: argparse.Namespace) -> "Runtime":
    """Where and how the runs execute (joining torchrun's process group first, when launched by it)."""
    from .. import distributed as dist
    from ..protocols import Runtime

    device = start_runtime(args)
    return Runtime(device=device, options=compute_options(args), progress=not args.no_progress,
                   skip_bad_images=args.skip_bad_images, log=print if dist.is_main() else lambda line: None)


def run_base2new_command(args: argparse.Namespace) -> int:
    from ..protocols import run_base2new

    runtime = runtime_of(args)
    datasets = list(BASE_TO_NEW_DATASETS) if args.datasets == ["all"] else args.datasets
    run_base2new(run_config(args), datasets, args.seeds, args.root, args.out, runtime, args.name)
    return 0


def run_dg_command(args: argparse.Namespace) -> int:
    from ..protocols import run_dg

    runtime = runtime_of(args)
    cfg = run_config(args, {"shots": args.shots}, preset=protocol_preset("dg", args.method))
    run_dg(cfg, args.dataset, args.seeds, args.root, args.out, runtime, args.name, args.targets, args.source_accuracy)
    return 0


def run_xd_command(args: argparse.Namespace) -> int:
    from ..protocols import run_xd

    runtime = runtime_of(args)
    targets = [t for t in CROSS_DATASET_TARGETS if t != args.source] if args.targets == ["all"] else args.targets
    run_xd(run_config(args, preset=protocol_preset("xd", args.method)), args.source, targets, args.seeds, args.root,
           args.out, runtime, args.name)
    return 0
