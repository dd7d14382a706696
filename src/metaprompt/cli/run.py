"""`metaprompt run base2new|dg|xd`: the field's benchmark protocols, one command each, resuming."""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..benchmark import BASE_TO_NEW_DATASETS, CROSS_DATASET_TARGETS, DG_DOMAINS
from ..errors import MetapromptError
from ..launchers import LAUNCHERS, worker_argv
from ..leases import STALE_SECONDS
from .common import ROOT_HELP, add_config_args, add_runtime_args, compute_options, run_config, start_runtime

if TYPE_CHECKING:
    from typing import Callable

    from ..protocols import Runtime

FEWSHOT_SHOTS = (1, 2, 4, 8, 16)
LAYOUT = {
    "fewshot": "OUT/fewshot/NAME/DATASET/shotsK/seedK/",
    "base2new": "OUT/base2new/NAME/DATASET/seedK/",
    "dg": "OUT/dg/NAME/DATASET/shotsK/TARGET/seedK/",
    "xd": "OUT/xd/NAME/SOURCE/DATASET/seedK/ (DATASET = SOURCE: the training run)",
}
COMMON = ("Each run gets a folder of its own, {layout}, holding result.json (metrics, seed, dataset, method, "
          "versions, wall time) and, when it trains, its resolved config.yaml and artifact prompts.safetensors. "
          "Re-running the same command skips finished runs (those with a result.json) and resumes unfinished ones. "
          "Any number of workers started with the same command and --out (on this machine or others sharing the "
          "file system, e.g. a SLURM job array) finish the sweep together: each claims a run before starting it, "
          "and a run whose worker is gone is taken over and resumed. Tabulate with `metaprompt report OUT`.")
SUMMARY_MARK = "sweep finished:"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a benchmark protocol (base-to-new, domain generalisation, cross-dataset, few-shot)",
        description="Run one of the field's benchmark protocols for one method over datasets and seeds, "
                    "skipping what is finished; any number of workers started with the same command and --out "
                    "(or --gpus) share one sweep.")
    protocols = p.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)

    b2n = _protocol_parser(
        protocols, "base2new", "base-to-new generalisation",
        "Per dataset and seed: train on the base classes (the first half of the sorted labels), then test the "
        "base test images over the base classes and the new test images over the new classes; the summary is "
        "the harmonic mean HM = 2*Base*New/(Base+New).")
    b2n.add_argument("--datasets", nargs="+", default=["all"], metavar="NAME",
                     help=f"datasets, or all = {' '.join(BASE_TO_NEW_DATASETS)}")
    b2n.set_defaults(func=protocol_command(run_base2new_command))

    dg = _protocol_parser(
        protocols, "dg", "domain generalisation (leave one domain out)",
        "For each target domain in turn: train on --shots images per class per source domain (the other "
        "domains), test on the target domain. MetaPrompt starts from its preset metaprompt_dg, the other "
        "methods from their default preset.", preset_default="metaprompt_dg for metaprompt, else the method's")
    dg.add_argument("--dataset", required=True, metavar="NAME",
                    help=f"one of: {', '.join(DG_DOMAINS)}, or a descriptor file of a dataset with domains")
    dg.add_argument("--shots", type=int, required=True, help="training images per class per source domain (1 or 5)")
    dg.add_argument("--targets", nargs="+", default=None, metavar="DOMAIN",
                    help="target domains (default: every domain of the dataset)")
    dg.add_argument("--source-accuracy", action="store_true",
                    help="also test each run on its source domains' test images (not its training shots), "
                         "reported as `source` beside the held-out domain's accuracy")
    dg.set_defaults(func=protocol_command(run_dg_command), dataset_args=("dataset",))  # its --targets are domains

    xd = _protocol_parser(
        protocols, "xd", "cross-dataset transfer",
        "Per seed: train once on the source dataset (all classes, the preset's shots: 16), then test that "
        "artifact on each target dataset's test split over the target's own classes. MaPLe starts from its "
        "released cross-dataset config (preset maple_xd); CoOp trains 50 epochs on ImageNet, as released.",
        preset_default="maple_xd for maple, else the method's")
    xd.add_argument("--source", default="imagenet", help="the dataset to train on (default: imagenet)")
    xd.add_argument("--targets", nargs="+", default=["all"], metavar="NAME",
                    help=f"target datasets, or all = {' '.join(CROSS_DATASET_TARGETS)} (without the source)")
    xd.set_defaults(func=protocol_command(run_xd_command))

    fewshot = _protocol_parser(
        protocols, "fewshot", "few-shot classification over all classes (CoOp's protocol)",
        "Per dataset, shot count and seed: train on that many images of every class, test on the whole test "
        "split over all classes; the report gives accuracy against shots per dataset and on average, the "
        "field's standard plot. CoOp starts from its few-shot preset coop_fewshot (16 random context tokens; 50, "
        "100 or 200 epochs by shots, as released); the other methods from their default preset.",
        preset_default="coop_fewshot for coop, else the method's")
    fewshot.add_argument("--datasets", nargs="+", default=["all"], metavar="NAME",
                         help=f"datasets, or all = {' '.join(BASE_TO_NEW_DATASETS)}")
    fewshot.add_argument("--shots", nargs="+", type=int, default=list(FEWSHOT_SHOTS), metavar="K",
                         help=f"shot counts (default: {' '.join(map(str, FEWSHOT_SHOTS))})")
    fewshot.set_defaults(func=protocol_command(run_fewshot_command))


def _protocol_parser(protocols: argparse._SubParsersAction, name: str, title: str, description: str,
                     preset_default: str = "the method's base-to-new preset") -> argparse.ArgumentParser:
    p = protocols.add_parser(name, help=title, description=f"{description} {COMMON.format(layout=LAYOUT[name])}")
    add_config_args(p, preset_default)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3], help="seeds, one run each (default: 1 2 3)")
    p.add_argument("--root", default=None, help=ROOT_HELP)
    p.add_argument("--out", required=True, help="results folder (one sub-folder per run)")
    p.add_argument("--name", default=None,
                   help="the method's name in folders and tables (default: the method), to compare variants")
    add_runtime_args(p)
    p.add_argument("--released-checkpoints", default=None, metavar="PATTERN",
                   help="evaluate released trainers' checkpoints instead of training: each run's output folder (or "
                        "model.pth.tar-N) of the released code, a path with {dataset}, {seed} and optionally "
                        "{shots} / {target}, e.g. 'weights/{dataset}/base/seed{seed}'; the runs are named "
                        "<method>-released unless --name says otherwise (docs/export.md)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep each finished run's checkpoint.pt (optimiser and RNG state); deleted otherwise")
    p.add_argument("--no-feature-store", action="store_true",
                   help="compute every frozen feature again in every run instead of sharing them through "
                        "OUT/.sweep/features (the results are the same, bit for bit)")
    workers = p.add_argument_group("several workers on one sweep")
    workers.add_argument("--launcher", choices=LAUNCHERS, default="local",
                         help="where the sweep's workers run: this process (local), a SLURM job array through "
                              "submitit (slurm), or Ray tasks (ray); every worker runs this same command")
    workers.add_argument("--jobs", type=int, default=None, metavar="N",
                         help="workers to start with --launcher slurm or ray (default: 1)")
    workers.add_argument("--slurm-opt", action="append", default=[], metavar="KEY=VALUE",
                         help="SLURM resources for --launcher slurm: partition, gpus (per task), cpus (per task), "
                              "mem_gb, time (minutes), account, qos, constraint, array_parallelism; any other KEY is "
                              "passed to sbatch as --KEY=VALUE; cluster=local runs the jobs on this machine")
    workers.add_argument("--ray-address", default=None, metavar="ADDR",
                         help="the Ray cluster for --launcher ray (default: RAY_ADDRESS, else a local one started "
                              "for the call)")
    workers.add_argument("--wait", action="store_true",
                         help="with --launcher slurm: wait for the jobs and print the tables (ray always waits)")
    workers.add_argument("--gpus", default=None, metavar="LIST",
                         help="start one worker per listed GPU of this machine (e.g. 0,1,2,3), each seeing only its "
                              "GPU, logging to OUT/.sweep/workers/; the summary is printed when all have finished "
                              "(the local launcher's shorthand)")
    workers.add_argument("--lease-timeout", type=float, default=STALE_SECONDS, metavar="SECONDS",
                         help="take over a run whose worker has not refreshed its lease for this long (a worker on "
                              "this machine whose process is gone is taken over at once) (default: %(default)s)")
    return p


def runtime_of(args: argparse.Namespace) -> "Runtime":
    """Where and how the runs execute (joining torchrun's process group first, when launched by it)."""
    from .. import distributed as dist
    from ..protocols import Runtime

    if not math.isfinite(args.lease_timeout) or args.lease_timeout <= 0:
        raise MetapromptError(f"--lease-timeout must be a positive number of seconds, got {args.lease_timeout}")
    device = start_runtime(args)
    return Runtime(device=device, options=compute_options(args), progress=not args.no_progress,
                   skip_bad_images=args.skip_bad_images, log=print if dist.is_main() else lambda line: None,
                   lease_timeout=args.lease_timeout, feature_store=not args.no_feature_store,
                   keep_checkpoint=args.keep_checkpoint, released=args.released_checkpoints)


def print_summary(results: list[dict]) -> None:
    """Every worker of a sweep prints the same tables at its end: the sweep's results, read from its folder."""
    from .. import distributed as dist
    from ..results import build_report, render

    if dist.is_main():
        print(f"\n{SUMMARY_MARK} {len(results)} runs\n")
        print(render(build_report(results).tables, "md"), end="")


def protocol_command(run: "Callable[[argparse.Namespace], list[dict]]"):
    """The command of a protocol: its sweep here, or its workers started by a launcher (``--gpus``: one per GPU of
    this machine; ``--launcher slurm|ray``: ``--jobs`` of them on the engine)."""
    def command(args: argparse.Namespace) -> int:
        check_launcher_options(args)
        if args.launcher == "local":
            if args.gpus is not None:
                return start_gpu_workers(args)
            print_summary(run(args))
            return 0
        run_config(args, {"shots": getattr(args, "shots", None) if args.protocol == "dg" else None},
                   protocol=args.protocol)  # a command that cannot run is refused before any job starts
        failures = launch(args)
        for line in failures:
            print(f"metaprompt: {line}", file=sys.stderr)
        if failures:
            return 1
        if args.launcher == "ray" or args.wait:
            print_summary(run(args))  # every run is finished: this reads their results
        return 0
    return command


def check_launcher_options(args: argparse.Namespace) -> None:
    engine = args.launcher != "local"
    if args.gpus is not None and engine:
        raise MetapromptError(f"--gpus is the local launcher's; with --launcher {args.launcher} the engine gives each "
                              "worker its GPU (--jobs N, and --slurm-opt gpus=1 for SLURM)")
    if args.jobs is not None and (not engine or args.jobs < 1):
        raise MetapromptError(f"--jobs {args.jobs}: expected 1 or more workers, with --launcher slurm or ray")
    for flag, value, launcher in (("--slurm-opt", args.slurm_opt, "slurm"), ("--ray-address", args.ray_address, "ray"),
                                  ("--wait", args.wait, "slurm")):
        if value and args.launcher != launcher:
            raise MetapromptError(f"{flag} is for --launcher {launcher}, not {args.launcher}")


def launch(args: argparse.Namespace) -> list[str]:
    """Start ``--jobs`` workers of this command on the engine; for SLURM, say where they are (and, with
    --wait, wait for them). One line per worker that failed."""
    from .. import launchers

    argv, jobs = launchers.worker_argv(args.argv), args.jobs or 1
    if args.launcher == "ray":
        return launchers.run_ray(argv, jobs, args.ray_address)
    submitted = launchers.submit_slurm(argv, args.out, jobs, args.slurm_opt)
    ids = ", ".join(job.job_id for job in submitted)
    print(f"submitted {jobs} worker(s) as SLURM job(s) {ids}; logs in {launchers.slurm_folder(args.out)}/ "
          f"(squeue / sacct show them); `metaprompt report {args.out}` tabulates what is finished", file=sys.stderr)
    return launchers.wait_slurm(submitted) if args.wait else []


def gpu_list(text: str) -> list[int]:
    try:
        gpus = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise MetapromptError(f"--gpus {text}: expected GPU indices separated by commas, e.g. 0,1,2,3") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise MetapromptError(f"--gpus {text}: expected distinct GPU indices (0 or more), e.g. 0,1,2,3")
    return gpus


def start_gpu_workers(args: argparse.Namespace) -> int:
    """One worker process per listed GPU (CUDA_VISIBLE_DEVICES set to it), all on this sweep; waits for them.
    Their output goes to OUT/.sweep/workers/gpuN.log; the first finished worker's summary is printed."""
    import torch

    gpus = gpu_list(args.gpus)
    if args.device not in (None, "cuda"):
        raise MetapromptError(f"--gpus with --device {args.device}: each worker runs on the one GPU it is given; "
                              "leave --device out")
    count = torch.cuda.device_count()
    if max(gpus) >= count:
        raise MetapromptError(f"--gpus {args.gpus}: this machine shows {count} CUDA device(s)"
                              + (f", 0 to {count - 1}" if count else " (torch.cuda.is_available() is False)"))
    logs = Path(args.out) / ".sweep" / "workers"
    try:
        logs.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MetapromptError(f"cannot write to the output folder {args.out} ({err.strerror})") from None
    command = [sys.executable, "-m", "metaprompt", *worker_argv(args.argv)]
    workers = []
    for gpu in gpus:
        log = logs / f"gpu{gpu}.log"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu)}
        with log.open("w") as stream:
            workers.append((gpu, log, subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)))
        print(f"worker on GPU {gpu}: pid {workers[-1][2].pid}, log {log}", file=sys.stderr)
    codes = {gpu: proc.wait() for gpu, _, proc in workers}
    for gpu, log, _ in workers:
        if codes[gpu] != 0:
            errors = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("metaprompt:")]
            print(f"worker on GPU {gpu} exited {codes[gpu]}: {errors[-1] if errors else 'see ' + str(log)}",
                  file=sys.stderr)
    finished = [log for gpu, log, _ in workers if codes[gpu] == 0]
    if finished:
        text = finished[0].read_text(errors="replace")
        print(text[text.index(SUMMARY_MARK) - 1:] if SUMMARY_MARK in text else text, end="")
    return max(codes.values())


def run_base2new_command(args: argparse.Namespace) -> list[dict]:
    from ..protocols import run_base2new

    runtime = runtime_of(args)
    datasets = list(BASE_TO_NEW_DATASETS) if args.datasets == ["all"] else args.datasets
    return run_base2new(run_config(args), datasets, args.seeds, args.root, args.out, runtime, args.name)


def run_dg_command(args: argparse.Namespace) -> list[dict]:
    from ..protocols import run_dg

    runtime = runtime_of(args)
    cfg = run_config(args, {"shots": args.shots}, protocol="dg")
    return run_dg(cfg, args.dataset, args.seeds, args.root, args.out, runtime, args.name, args.targets,
                  args.source_accuracy)


def run_fewshot_command(args: argparse.Namespace) -> list[dict]:
    from ..protocols import run_fewshot

    bad = [k for k in args.shots if k < 1]
    if bad:
        raise MetapromptError(f"--shots: expected shot counts of 1 or more, got {' '.join(map(str, bad))}")
    runtime = runtime_of(args)
    datasets = list(BASE_TO_NEW_DATASETS) if args.datasets == ["all"] else args.datasets
    cfg = run_config(args, protocol="fewshot")
    return run_fewshot(cfg, datasets, args.shots, args.seeds, args.root, args.out, runtime, args.name)


def run_xd_command(args: argparse.Namespace) -> list[dict]:
    from ..protocols import run_xd

    runtime = runtime_of(args)
    targets = [t for t in CROSS_DATASET_TARGETS if t != args.source] if args.targets == ["all"] else args.targets
    return run_xd(run_config(args, protocol="xd"), args.source, targets, args.seeds,
                  args.root, args.out, runtime, args.name)
