"""Arguments and steps shared by several subcommands."""
from __future__ import annotations

import argparse

import torch

from .. import distributed as dist
from ..config import DEFAULT_PRESETS, RunConfig, preset_names, resolve
from ..methods import ComputeOptions
from ..tasks import TaskSpec

CLASS_SUBSETS = ("base", "new", "all")


def add_data_args(p: argparse.ArgumentParser, classes_default: str = "all") -> None:
    p.add_argument("--dataset", required=True,
                   help="dataset name (eurosat, oxford_pets, pacs, world, ...; see `metaprompt data check`) "
                        "or `imagefolder` to read --root as ROOT/<split>/<class>/*.png|jpg")
    p.add_argument("--root", required=True, help="data root: the folder holding the dataset folders ($DATA)")
    p.add_argument("--classes", choices=CLASS_SUBSETS, default=classes_default,
                   help=f"class subset: base = first half of the sorted labels, new = the rest (default: {classes_default})")
    p.add_argument("--target-domain", default=None,
                   help="domain generalisation: leave this domain out (train on the others, test on it)")


def add_config_args(p: argparse.ArgumentParser, preset_default: str = "the method's base-to-new preset") -> None:
    """Method, preset, ``--set`` overrides and model: what :func:`run_config` resolves."""
    p.add_argument("--method", default=None, help=f"method: {', '.join(DEFAULT_PRESETS)} (default: the preset's)")
    p.add_argument("--preset", default=None,
                   help=f"published configuration to start from: {', '.join(preset_names())}, or a YAML file "
                        f"(default: {preset_default})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option, e.g. --set lr=0.002 --set n_ctx=4 (train.KEY / method.KEY disambiguate)")
    p.add_argument("--model", default=None,
                   help="open_clip model name (ViT-B-16), hf-hub:ID, a model config JSON, or world-tiny (default: the preset's)")
    p.add_argument("--pretrained", default=None,
                   help="open_clip pretrained tag (openai), a local checkpoint file, or none (default: the preset's)")


def run_config(args: argparse.Namespace, sets: list[str], preset: str | None = None) -> RunConfig:
    """The run's configuration: the preset (``preset`` when ``--preset`` is not given), then ``--set``,
    then ``sets`` (the command's own options), then ``--workers``."""
    sets = [*args.sets, *sets]
    sets += [f"train.num_workers={args.workers}"] if args.workers is not None else []
    return resolve(args.method, args.preset or preset, sets, args.model, args.pretrained)


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes (default: 2)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip truncated or unreadable images (counted in the results) instead of stopping")
    g = p.add_argument_group("compute (exact shortcuts and memory)")
    g.add_argument("--reference-compute", action="store_true",
                   help="turn every exact shortcut off and compute as the reference codebases do (for comparisons)")
    g.add_argument("--class-chunk", type=int, default=0,
                   help="encode at most this many class prompts per text-encoder call (0: all at once)")
    g.add_argument("--text-checkpointing", action="store_true",
                   help="activation checkpointing in the text encoder (less memory)")


def compute_options(args: argparse.Namespace) -> ComputeOptions:
    off = args.reference_compute
    return ComputeOptions(truncate_context=not off, cache_text_features=not off, reuse_frozen_features=not off,
                          cache_image_features=not off, class_chunk=args.class_chunk,
                          text_checkpointing=args.text_checkpointing)


def device_of(args: argparse.Namespace) -> str:
    if args.device:
        return args.device
    if torch.cuda.is_available():
        return f"cuda:{dist.local_rank()}" if dist.is_distributed() else "cuda"
    return "cpu"


def task_spec(args: argparse.Namespace, shots: int, seed: int) -> TaskSpec:
    return TaskSpec(dataset=args.dataset, root=args.root, classes=args.classes, shots=shots, seed=seed,
                    target=args.target_domain)
