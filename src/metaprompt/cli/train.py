"""`metaprompt train`: learn prompts on a dataset and write the artifact, the resolved config and metrics."""
from __future__ import annotations

import argparse

from .common import HelpFormatter, add_config_args, add_data_args, add_runtime_args, compute_options, run_config, start_runtime, task_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="learn prompts on a dataset",
        description="Train a method's prompts on a dataset (few-shot), save them as a small safetensors "
                    "artifact with the full resolved config, and report test accuracy. Re-running the same "
                    "command resumes an interrupted run; re-running a finished one says so and exits 0 (--overwrite trains "
                    "it again). Everything the console says goes to log.txt in --out too. "
                    "Launch with `torchrun --nproc_per_node N -m metaprompt train ...` for several processes.",
        formatter_class=HelpFormatter)
    add_config_args(p)
    p.add_argument("--shots", type=int, default=None, help="training images per class (0 = all; default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="random seed of the few-shot draw and training (default: the preset's)")
    p.add_argument("--out", required=True, help="run folder for prompts.safetensors, config.yaml, metrics.json")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep checkpoint.pt (optimiser and RNG state) when the run finishes; it is deleted otherwise")
    add_data_args(p)
    add_runtime_args(p)
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from .. import distributed as dist
    from ..experiment import finished_metrics, train_run
    from ..runlog import run_log

    cfg = run_config(args, {"shots": args.shots, "seed": args.seed},
                     protocol="dg" if args.target_domain else "base2new").for_task(args.dataset)
    finished = None if args.overwrite else finished_metrics(args.out, cfg, task_spec(args))
    if finished is not None:
        print(f"{args.out} holds this run, finished: test accuracy {finished['accuracy']:.2f}% (skipped; pass "
              "--overwrite to train it again)")
        return 0
    device = start_runtime(args)
    with run_log(args.out, dist.is_main()):
        metrics = train_run(cfg, task_spec(args), args.out, device=device, options=compute_options(args),
                            progress=not args.no_progress, overwrite=args.overwrite,
                            skip_bad_images=args.skip_bad_images, keep_checkpoint=args.keep_checkpoint).metrics
        if dist.is_main():
            skipped = f", {metrics['skipped_images']} unreadable images skipped" if metrics["skipped_images"] else ""
            print(f"{cfg.method} on {args.dataset} ({args.classes} classes): test accuracy "
                  f"{metrics['accuracy']:.2f}% over {metrics['num_test']} images, {metrics['num_classes']} "
                  f"classes{skipped}; run in {args.out}")
    return 0
