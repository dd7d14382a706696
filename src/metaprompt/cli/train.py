"""`metaprompt train`: learn prompts on a dataset and write the artifact, the resolved config and metrics."""
from __future__ import annotations

import argparse

from .. import distributed as dist
from ..config import DEFAULT_PRESETS, preset_names, resolve
from ..experiment import train_run
from .common import add_data_args, add_runtime_args, compute_options, device_of, task_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="learn prompts on a dataset",
        description="Train a method's prompts on a dataset (few-shot), save them as a small safetensors "
                    "artifact with the full resolved config, and report test accuracy. Re-running the same "
                    "command resumes an interrupted run; a finished run is kept unless --overwrite is given. "
                    "Launch with `torchrun --nproc_per_node N -m metaprompt train ...` for several processes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--method", default=None, help=f"method: {', '.join(DEFAULT_PRESETS)} (default: the preset's)")
    p.add_argument("--preset", default=None,
                   help=f"published configuration to start from: {', '.join(preset_names())}, or a YAML file "
                        "(default: the method's base-to-new preset)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option, e.g. --set lr=0.002 --set n_ctx=4 (train.KEY / method.KEY disambiguate)")
    p.add_argument("--model", default=None,
                   help="open_clip model name (ViT-B-16), hf-hub:ID, a model config JSON, or world-tiny (default: the preset's)")
    p.add_argument("--pretrained", default=None,
                   help="open_clip pretrained tag (openai), a local checkpoint file, or none (default: the preset's)")
    p.add_argument("--shots", type=int, default=None, help="training images per class (0 = all; default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the few-shot draw and training (default: the preset's)")
    p.add_argument("--out", required=True, help="run folder for prompts.safetensors, config.yaml, metrics.json")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    add_data_args(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dist.init_from_environment()
    sets = list(args.sets)
    sets += [f"train.shots={args.shots}"] if args.shots is not None else []
    sets += [f"train.seed={args.seed}"] if args.seed is not None else []
    sets += [f"train.num_workers={args.workers}"] if args.workers is not None else []
    cfg = resolve(args.method, args.preset, sets, args.model, args.pretrained)
    spec = task_spec(args, cfg.train.shots, cfg.train.seed)
    _, metrics = train_run(cfg, spec, args.out, device=device_of(args), options=compute_options(args),
                           progress=not args.no_progress, overwrite=args.overwrite,
                           skip_bad_images=args.skip_bad_images)
    if dist.is_main():
        skipped = f", {metrics['skipped_images']} unreadable images skipped" if metrics["skipped_images"] else ""
        print(f"{cfg.method} on {args.dataset} ({args.classes} classes): test accuracy {metrics['accuracy']:.2f}% "
              f"over {metrics['num_test']} images, {metrics['num_classes']} classes{skipped}; run in {args.out}")
    return 0
