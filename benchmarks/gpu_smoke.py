"""The first run on a GPU, prepared: every CUDA and nccl path of the library once, in about five minutes on one
GPU, with one summary file. Started by benchmarks/gpu_smoke.sh (which installs the wheels a bare device machine
lacks); see its header for how to run it on a lent device.

Steps (each PASS, FAIL or SKIP with its time and what it saw, in ``OUT/gpu_smoke.md``):

- ``environment``: torch, CUDA, the GPU; FAIL without CUDA unless ``--dry-run``.
- ``world``: a small render of the offline world (the data of every step below).
- ``methods-PRECISION``: every method trains 3 steps through the CLI on the world's tiny CLIP, in fp32,
  bf16 and fp16-pure, with the default data-loading workers; the artifact records the precision.
- ``fp16``: mixed fp16 training is refused with the advice to use bf16; ``eval --precision`` fp16 and bf16 of
  an fp32 artifact agree with its fp32 logits.
- ``published``: ViT-B/16 (random weights: speed and memory do not depend on their values) trains 10 steps of
  every published preset at its published batch size, in the default precision (bf16 on a GPU).
- ``gpu-tests``: ``METAPROMPT_TEST_GPU=1 pytest -m gpu`` (methods moved to the GPU, shortcuts on == off).
- ``resume``: a deterministic run stopped by SIGTERM after its first epoch and re-run ends bit-identical to
  an uninterrupted one.
- ``torchrun``: ``torchrun --nproc_per_node 1`` (nccl on a GPU) trains what one plain process trains, runs a
  base-to-new sweep, and every collective of :mod:`metaprompt.distributed` on device tensors.
- ``bench-speed``: benchmarks/bench_speed.py at the published sizes, its output in ``OUT/bench_speed.txt``.

``--dry-run`` runs what a CPU can (the GPU-only steps SKIP): the tests run it, so the script cannot rot.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # a few prompt tokens on the tiny CLIP's 4 blocks
    "zeroshot": [], "coop": ["n_ctx=4"], "cocoop": [], "kgcoop": ["n_ctx=4"], "vpt": ["depth=4", "n_vis=2"],
    "ivlp": ["text_depth=4", "vision_depth=4"], "maple": ["depth=2"],
    "metaprompt": ["text_depth=4", "vision_depth=4"], "promptsrc": ["text_depth=4", "vision_depth=4"],
    "linear_probe": []}
PRESETS = {  # the published configurations, each at its published batch size
    "coop_b2n": "world", "cocoop_b2n": "world", "vpt": "world", "ivlp_b2n": "world", "maple_b2n": "world",
    "metaprompt_b2n": "world", "metaprompt_dg": "world_dg", "kgcoop_b2n": "world", "promptsrc_b2n": "world",
    "linear_probe": "world"}
PUBLISHED_STEPS = 10
BUDGET_SECONDS = 300


class StepFailed(Exception):
    """A step saw something other than what it checks for."""


@dataclass
class Outcome:
    name: str
    result: str
    seconds: float
    details: list[str] = field(default_factory=list)


class Smoke:
    """The steps' shared state: where data and runs go, the device, the log every command writes to."""

    def __init__(self, out: Path, work: Path, dry_run: bool):
        self.out, self.work, self.dry_run = out, work, dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.data = work / "data"
        self.log = (out / "gpu_smoke.log").open("a")
        self.started = time.monotonic()
        self.details: list[str] = []

    def note(self, line: str) -> None:
        self.details.append(line)

    def left(self) -> float:
        return BUDGET_SECONDS - (time.monotonic() - self.started)

    # ------------------------------------------------------------ running commands
    def cli(self, *args: str, expect: int = 0) -> str:
        """``metaprompt ARGS`` in this process (no second start-up of torch); its stderr, checked."""
        from metaprompt.cli import main

        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(list(args))
        self.log.write(f"$ metaprompt {' '.join(args)}\n{out.getvalue()}{err.getvalue()}[exit {code}]\n")
        self.log.flush()
        if code != expect:
            raise StepFailed(f"metaprompt {args[0]} exited {code} (expected {expect}): {last_error(err.getvalue())}")
        return err.getvalue()

    def command(self, argv: list[str], timeout: float, env: dict | None = None, expect: int | None = 0,
                **popen) -> subprocess.CompletedProcess:
        """A command in a process of its own, its output in the log, its exit status checked."""
        self.log.write(f"$ {' '.join(argv)}\n")
        self.log.flush()
        done = subprocess.run(argv, stdout=self.log, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT,
                              env={**os.environ, **(env or {})}, **popen)
        self.log.write(f"[exit {done.returncode}]\n")
        self.log.flush()
        if expect is not None and done.returncode != expect:
            raise StepFailed(f"{' '.join(argv[:4])}... exited {done.returncode} (expected {expect}); see gpu_smoke.log")
        return done

    def train_args(self, out: Path, method: str, *options: str, dataset: str = "world", extra=()) -> list[str]:
        """A few steps of ``method`` on the world's base classes with the tiny CLIP (``options``: --set)."""
        sets = [x for option in options for x in ("--set", option)]
        return ["train", "--method", method, "--model", "world-tiny", "--pretrained", "none", "--dataset", dataset,
                "--root", str(self.data), "--classes", "base", "--shots", "2", "--out", str(out), "--no-progress",
                "--device", self.device, *sets, *extra]


def last_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("metaprompt: error")]
    return lines[-1] if lines else (stderr.strip().splitlines() or ["(no output)"])[-1]


def metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def trained(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run / "prompts.safetensors"))


def same_tensors(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------- the steps
STEPS: list[tuple[str, Callable[[Smoke], None], bool]] = []
"""(name, step, needs a GPU) in the order they run."""


def step(name: str, gpu_only: bool = False):
    def register(fn: Callable[[Smoke], None]):
        STEPS.append((name, fn, gpu_only))
        return fn
    return register


@step("environment")
def environment(s: Smoke) -> None:
    import open_clip
    import torch

    s.note(f"python {platform.python_version()}, torch {torch.__version__}, open_clip {open_clip.__version__}, "
           f"{len(os.sched_getaffinity(0))} CPU cores")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        s.note(f"{torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB, "
               f"CUDA {torch.version.cuda}, nccl {'.'.join(map(str, torch.cuda.nccl.version()))}")
    elif not s.dry_run:
        raise StepFailed("torch sees no CUDA device (torch.cuda.is_available() is False)")


@step("world")
def world(s: Smoke) -> None:
    s.cli("world", "render", "--out", str(s.data / "world"), "--train-per-class", "4", "--test-per-class", "2",
          "--val-per-class", "1", "--processes", str(min(8, len(os.sched_getaffinity(0)))))
    s.note(f"rendered into {s.data / 'world'}")


def methods_in(precision: str):
    def run(s: Smoke) -> None:
        for method, sizes in METHODS.items():
            out = s.work / f"{method}-{precision}"
            began = time.perf_counter()
            s.cli(*s.train_args(out, method, *sizes, "epochs=1", "batch_size=4", "max_steps=3",
                                f"precision={precision}"))
            m = metrics(out)
            expected_steps = 0 if method in ("zeroshot", "linear_probe") else 3
            recorded = "fp32" if precision == "fp16-pure" and s.device == "cpu" else precision
            if m["train_steps"] != expected_steps or m["precision"] != recorded:
                raise StepFailed(f"{method}: {m['train_steps']} steps in {m['precision']}, expected "
                                 f"{expected_steps} in {recorded}")
            s.note(f"{method}: accuracy {m['accuracy']:.1f}, {time.perf_counter() - began:.1f} s")
    return run


for _precision, _gpu_only in (("fp32", False), ("bf16", False), ("fp16-pure", True)):
    step(f"methods-{_precision}", gpu_only=_gpu_only)(methods_in(_precision))


@step("fp16")
def fp16(s: Smoke) -> None:
    import numpy as np

    err = s.cli(*s.train_args(s.work / "fp16-mixed", "coop", "precision=fp16"), expect=2)
    if "precision=bf16" not in err:
        raise StepFailed(f"fp16 training refused without naming bf16: {last_error(err)}")
    s.note("mixed fp16 training refused, bf16 advised")
    artifact = s.work / "coop-fp32" / "prompts.safetensors"
    logits = {}
    for precision in ("fp32", "bf16", "fp16"):
        dump = s.work / f"eval-{precision}.npz"
        s.cli("eval", "--prompts", str(artifact), "--dataset", "world", "--root", str(s.data), "--classes", "base",
              "--precision", precision, "--device", s.device, "--no-progress", "--dump-logits", str(dump))
        logits[precision] = np.load(dump)["logits"]
    for precision in ("bf16", "fp16"):
        agree = float((logits[precision].argmax(1) == logits["fp32"].argmax(1)).mean())
        diff = float(np.abs(logits[precision] - logits["fp32"]).max())
        s.note(f"eval --precision {precision}: top-1 agrees with fp32 on {100 * agree:.0f}%, largest logit difference {diff:.3f}")
        if agree < 0.9:
            raise StepFailed(f"eval in {precision} agrees with fp32 on {100 * agree:.0f}% of the images only")


@step("published", gpu_only=True)
def published(s: Smoke) -> None:
    from metaprompt.config import load_preset

    for preset, dataset in PRESETS.items():
        out = s.work / f"vitb16-{preset}"
        target = ["--target-domain", "photo"] if dataset == "world_dg" else ["--classes", "base"]
        began = time.perf_counter()
        s.cli("train", "--preset", preset, "--model", "ViT-B-16", "--pretrained", "none", "--dataset", dataset,
              "--root", str(s.data), "--shots", "4", "--out", str(out), "--no-progress", "--device", s.device,
              "--set", f"max_steps={PUBLISHED_STEPS}", *target)
        m = metrics(out)
        batch = load_preset(preset).train.batch_size
        s.note(f"{preset}: batch {batch}, {m['train_steps']} steps in {m['train_seconds']:.2f} s "
               f"({m['train_steps'] * batch / max(m['train_seconds'], 1e-9):.0f} images/s with loading), "
               f"{m['precision']}, total {time.perf_counter() - began:.1f} s")


@step("gpu-tests", gpu_only=True)
def gpu_tests(s: Smoke) -> None:
    s.command([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
              timeout=max(30, min(120, s.left())), env={"METAPROMPT_TEST_GPU": "1"})
    s.note("pytest -m gpu passed (see gpu_smoke.log)")


RESUME_OPTIONS = ("n_ctx=4", "epochs=6", "batch_size=2", "warmup_epochs=0")
IN_EPOCH_2 = re.compile(r"epoch 2/6:[^\r\n]*?\| *[1-9]\d*/\d+ ")
"""The progress bar of epoch 2 after at least one of its batches."""


@step("resume")
def resume(s: Smoke) -> None:
    import torch

    extra = ("--deterministic",)
    reference = s.work / "resume-reference"
    s.cli(*s.train_args(reference, "coop", *RESUME_OPTIONS, extra=extra))
    stopped = s.work / "resume-stopped"
    args = [a for a in s.train_args(stopped, "coop", *RESUME_OPTIONS, extra=extra) if a != "--no-progress"]
    code, stderr = stop_when(IN_EPOCH_2, [sys.executable, "-m", "metaprompt", *args], signal.SIGTERM)
    s.log.write(stderr)
    if (stopped / "prompts.safetensors").is_file() or not (stopped / "checkpoint.pt").is_file():
        raise StepFailed(f"SIGTERM (exit {code}) left no checkpoint of an unfinished run")
    checkpoint = torch.load(stopped / "checkpoint.pt", weights_only=True)
    at = f"epoch {checkpoint['state']['epoch'] + 1}, after batch {checkpoint['state']['batch']}"
    checkpoint["state"]["history"][0]["mark"] = "before the re-run"
    torch.save(checkpoint, stopped / "checkpoint.pt")
    s.cli(*s.train_args(stopped, "coop", *RESUME_OPTIONS, extra=(*extra, "--keep-checkpoint")))
    resumed_from_it = torch.load(stopped / "checkpoint.pt", weights_only=True)["state"]["history"][0].get("mark")
    if resumed_from_it != "before the re-run":
        raise StepFailed("the re-run started over instead of resuming from the checkpoint")
    if not same_tensors(trained(stopped), trained(reference)):
        raise StepFailed("the resumed run's prompts differ from the uninterrupted run's")
    s.note(f"SIGTERM (exit {code}) in {at}; the re-run resumed and ended bit-identical")


def stop_when(pattern: re.Pattern, argv: list[str], sig: signal.Signals, timeout: float = 120) -> tuple[int, str]:
    """Start ``argv``; send ``sig`` once its stderr matches ``pattern``. Exit status and stderr."""
    seen = bytearray()
    env = {**os.environ, "METAPROMPT_PROGRESS": "always"}  # progress bars into the pipe, to see epoch 2 begin
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env) as proc:
        reader = threading.Thread(target=lambda: [seen.extend(c) for c in iter(lambda: proc.stderr.read1(4096), b"")])
        reader.start()
        deadline = time.monotonic() + timeout
        while not pattern.search(seen.decode(errors="replace")):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                reader.join()
                raise StepFailed(f"the run ended (or hung) before epoch 2: {last_error(seen.decode(errors='replace'))}")
            time.sleep(0.002)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        reader.join()
    return code, seen.decode(errors="replace")


@step("torchrun")
def torchrun(s: Smoke) -> None:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    one = s.work / "torchrun-one"
    options = ("n_ctx=4", "epochs=2", "batch_size=4")
    s.cli(*s.train_args(s.work / "plain", "coop", *options, extra=("--deterministic",)))
    s.command([*launch, "-m", "metaprompt", *s.train_args(one, "coop", *options, extra=("--deterministic",))],
              timeout=120)
    if not same_tensors(trained(one), trained(s.work / "plain")):
        raise StepFailed("torchrun at world size 1 trained other prompts than a plain process")
    s.note("train under torchrun = train in one plain process, bit for bit")
    sweep = s.work / "sweep"
    s.command([*launch, "-m", "metaprompt", "run", "base2new", "--preset", "world_coop_b2n", "--root", str(s.data),
               "--datasets", "world", "--seeds", "1", "2", "--out", str(sweep), "--device", s.device,
               "--no-progress", "--set", "max_steps=3"], timeout=180)
    results = sorted(sweep.rglob("result.json"))
    if len(results) != 2:
        raise StepFailed(f"the sweep under torchrun wrote {len(results)} results, expected 2")
    s.note(f"base-to-new sweep under torchrun: {len(results)} runs")
    done = s.command([*launch, str(Path(__file__).resolve()), "--collectives", "--device", s.device], timeout=120)
    s.note(f"every collective on {s.device} tensors under {'gloo' if s.device == 'cpu' else 'nccl'}: "
           f"{'passed' if done.returncode == 0 else 'failed'}")


@step("bench-speed", gpu_only=True)
def bench_speed(s: Smoke) -> None:
    report = s.out / "bench_speed.txt"
    with report.open("w") as f:
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_speed.py"), "--device", "cuda"],
                              stdout=f, stderr=subprocess.STDOUT, timeout=max(60, s.left()), cwd=ROOT)
    if done.returncode != 0:
        raise StepFailed(f"bench_speed.py exited {done.returncode}; see bench_speed.txt")
    s.note("published sizes: see bench_speed.txt")


# ---------------------------------------------------------------------------------------------- collectives
def collectives(device: str) -> int:
    """Under torchrun: every collective of :mod:`metaprompt.distributed` on ``device`` tensors, checked."""
    import torch

    from metaprompt import distributed as dist

    device = torch.device(dist.select_device(device))
    dist.init_from_environment(device)
    n = dist.world_size()
    checks = {
        "global_sum": lambda: torch.equal(dist.global_sum(torch.ones(3, device=device)).cpu(), torch.full((3,), n)),
        "global_count": lambda: dist.global_count(5) == 5 * n,
        "sum_gradients": lambda: _summed_gradient(dist, device, n),
        "broadcast_from_main": lambda: _broadcast(dist, device),
        "gather_rows": lambda: dist.gather_rows(torch.ones(2, 3, device=device)).shape == (2 * n, 3),
        "fail_together": lambda: dist.fail_together(None) is None,
        "barrier": lambda: dist.barrier() is None,
    }
    failed = [name for name, check in checks.items() if not check()]
    print(f"collectives on {device} ({torch.distributed.get_backend() if dist.is_distributed() else 'none'}, "
          f"world size {n}): {', '.join(checks)}; failed: {', '.join(failed) or 'none'}")
    torch.distributed.destroy_process_group()
    return 1 if failed else 0


def _summed_gradient(dist, device, n) -> bool:
    import torch

    p = torch.nn.Parameter(torch.zeros(2, device=device))
    p.grad = torch.ones(2, device=device)
    dist.sum_gradients([p.grad, None])
    return torch.equal(p.grad.cpu(), torch.full((2,), float(n)))


def _broadcast(dist, device) -> bool:
    import torch

    value = torch.full((4,), float(dist.rank()), device=device)
    dist.broadcast_from_main([value])
    return torch.equal(value.cpu(), torch.zeros(4))


# ---------------------------------------------------------------------------------------------- main
def run_steps(s: Smoke) -> list[Outcome]:
    outcomes = []
    for name, fn, gpu_only in STEPS:
        began = time.perf_counter()
        s.details = []
        if gpu_only and s.dry_run:
            outcomes.append(Outcome(name, "SKIP", 0.0, ["needs a GPU (dry run)"]))
            continue
        try:
            fn(s)
            result = "PASS"
        except Exception as err:  # a step's failure is reported, and the next step still runs
            result = "FAIL"
            s.details.append(str(err) if isinstance(err, StepFailed) else f"{type(err).__name__}: {err}")
            s.log.write(traceback.format_exc())
        outcomes.append(Outcome(name, result, time.perf_counter() - began, s.details))
        print(f"{result}  {name} ({outcomes[-1].seconds:.1f} s)", flush=True)
    return outcomes


def write_summary(path: Path, outcomes: list[Outcome], dry_run: bool, total: float) -> None:
    lines = [f"# benchmarks/gpu_smoke.sh{' --dry-run' if dry_run else ''}: "
             f"{sum(o.result == 'PASS' for o in outcomes)} passed, {sum(o.result == 'FAIL' for o in outcomes)} "
             f"failed, {sum(o.result == 'SKIP' for o in outcomes)} skipped in {total:.0f} s", "",
             "| step | result | seconds | what it saw |", "|---|---|---:|---|"]
    for o in outcomes:
        lines.append(f"| {o.name} | {o.result} | {o.seconds:.1f} | {'<br>'.join(o.details)} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-smoke"),
                   help="folder for gpu_smoke.md, gpu_smoke.log, bench_speed.txt (default: $OUT, else ./gpu-smoke)")
    p.add_argument("--dry-run", action="store_true", help="on the CPU, skipping the steps that need a GPU")
    p.add_argument("--only", nargs="+", choices=[name for name, _, _ in STEPS], default=None,
                   help="run these steps only (environment and world always run)")
    p.add_argument("--collectives", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.collectives:
        return collectives(args.device)
    if args.only:
        STEPS[:] = [entry for entry in STEPS if entry[0] in {"environment", "world", *args.only}]
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metaprompt-gpu-smoke-") as work:
        outcomes = run_steps(Smoke(args.out, Path(work), args.dry_run))
    summary = args.out / "gpu_smoke.md"
    write_summary(summary, outcomes, args.dry_run, time.perf_counter() - began)
    print(summary.read_text())
    return 1 if any(o.result == "FAIL" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
