"""Speed and memory of the exact shortcuts, side by side, in one run.

For MetaPrompt (base-to-new and domain-generalisation configs), CoOp, CoCoOp and MaPLe on the ViT-B/16
architecture with random weights (speed does not depend on weight values), each with every exact shortcut
off (``ComputeOptions.reference()``: the reference codebases' computation) and on (the defaults):

- training time per batch at the published batch size (the method's preset), on synthetic images: compute
  only, no data loading; CoOp and CoCoOp with shortcuts on train from the view feature cache, as every epoch
  does once its view has been encoded (``augment_views > 0``);
- the FLOPs of that step (``torch.utils.flop_counter``) and the achieved FLOP/s against this machine's
  measured matmul throughput;
- peak memory of the step above what was allocated before it, in a run of its own: CUDA
  ``torch.cuda.max_memory_allocated``; CPU the peak bytes of live tensor storages the step allocates, tracked
  op by op (:class:`LiveTensorPeak`);
- evaluation throughput (images/s per test batch) on a 100-class and a 1000-class test, and the
  once-per-evaluation cost of the class text features when they are cached.

    python benchmarks/bench_speed.py                # cuda when available: the published sizes
    python benchmarks/bench_speed.py --device cpu   # reduced sizes (--scale 1/16): minutes on 2 cores

On CPU the batch sizes and class counts are scaled down together (``--scale``), which keeps the text : image
work of a batch, and so the on/off ratios, close to the full size's; the floors are printed.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
import weakref
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator

import torch
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from metaprompt.costs import FlopCount
from metaprompt.clip import AUTOCAST_DTYPES, PromptCLIP, exact_context, load_clip
from metaprompt.precision import PRECISIONS
from metaprompt.config import load_preset
from metaprompt.methods import Batch, ComputeOptions, PromptMethod, build_method, make_config

MODEL = "ViT-B-16"
SETTINGS = {"metaprompt-b2n": "metaprompt_b2n", "metaprompt-dg": "metaprompt_dg", "coop": "coop_b2n",
            "cocoop": "cocoop_b2n", "maple": "maple_b2n"}
TRAIN_CLASSES = 100
TEST_CLASSES = (100, 1000)
SOURCE_DOMAINS = 3
"""Source domains in a domain-generalisation batch (PACS, VLCS, OfficeHome leave one of 4 out)."""
CPU_SCALE = Fraction(1, 16)
MIN_CLASSES = 4
MEMORY_SETTING = "coop"
"""Whose class text features the memory options are measured on."""
MATMUL_SIZE = {"cpu": 2048, "cuda": 8192}
MIB = 2 ** 20
MODES = {"off": ComputeOptions.reference(), "on": ComputeOptions()}
TARGET_SPEEDUPS = {"train step": 3.0, "eval 100": 10.0, "eval 1000": 30.0}
TARGET_MEMORY = 0.5
"""The issue's targets for MetaPrompt base-to-new, shortcuts on vs off."""


# ------------------------------------------------------------------------------------------- measuring
class LiveTensorPeak(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the mode and still alive: CPU peak memory.

    A storage is new when an op outputs it and none of the op's inputs holds it (views, in-place ops and
    detaches share their input's storage); it stops counting when torch frees it. Memory torch allocates
    outside tensors (oneDNN scratch space, allocator slack) is not counted.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        held = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage(), held)
        return out

    def _track(self, storage: torch.UntypedStorage, held: set[int]) -> None:
        key, size = storage.data_ptr(), storage.nbytes()
        if not size or key in held or key in self.live:
            return
        self.live[key] = size
        self.current += size
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._release, key)

    def _release(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


class CudaPeak:
    """Peak memory allocated on ``device`` (the GPU the benchmark runs on, not the current one) inside the
    block, above what was allocated when it began."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self) -> "CudaPeak":
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.base = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.synchronize(self.device)
        self.peak = torch.cuda.max_memory_allocated(self.device) - self.base


def synchronizer(device: torch.device) -> Callable[[], None]:
    """Waits for ``device`` itself (torch.cuda.synchronize() alone waits for the current GPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def median_seconds(run: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flop_count(run: Callable[[], object]) -> int:
    with FlopCount() as counter:
        run()
    return counter.flops


def peak_memory(run: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of one run (a run of its own: no other dispatch mode adds overhead or holds tensors)."""
    memory = CudaPeak(device) if device.type == "cuda" else LiveTensorPeak()
    with memory:
        run()
    return memory.peak


def matmul_throughput(device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of one large square matmul in ``dtype``: this machine's practical ceiling."""
    n = MATMUL_SIZE[device.type]
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    sync = synchronizer(device)
    median_seconds(lambda: a @ b, 1, sync)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, 5, sync)


# ------------------------------------------------------------------------------------------- workload
@dataclass(frozen=True)
class Setting:
    """A method with its published configuration (from the package preset)."""

    label: str
    method: str
    method_config: dict
    train_batch: int
    test_batch: int

    @classmethod
    def from_preset(cls, label: str, preset: str) -> "Setting":
        data = load_preset(preset)
        return cls(label, data["method"], data.get("method_config", {}), data["train"]["batch_size"],
                   data["train"]["test_batch_size"])

    @property
    def min_batch(self) -> int:
        """MetaPrompt's domain-split update needs images on both sides of every split."""
        return 2 if self.method == "metaprompt" else 1


@dataclass(frozen=True)
class Plan:
    """What to run: the scale of batch sizes and class counts, and how often to time each cell."""

    scale: Fraction
    train_classes: int
    """Classes of the training step (scaled)."""
    tests: dict[int, int]
    """Evaluation tests: published class count -> class count run (scaled)."""
    repeats: int

    def batch(self, published: int, floor: int = 1) -> int:
        return max(floor, round(published * self.scale))


def scaled_classes(published: int, scale: Fraction) -> int:
    return max(MIN_CLASSES, round(published * scale))


def classnames(n: int) -> list[str]:
    """``n`` ImageNet class names spread over the list (realistic token lengths for truncation)."""
    return [IMAGENET_CLASSNAMES[i * len(IMAGENET_CLASSNAMES) // n] for i in range(n)]


def build(setting: Setting, clip: PromptCLIP, options: ComputeOptions, n_classes: int) -> PromptMethod:
    torch.manual_seed(0)
    return build_method(setting.method, clip, classnames(n_classes),
                        make_config(setting.method, setting.method_config), options=options)


def training_batch(method: PromptMethod, size: int, image_size: int) -> Batch:
    """Random images; labels spread over the classes (for MetaPrompt's class split: over every group of
    the split the step will draw); domains cycling over the source domains."""
    n = method.num_classes
    labels = [i * n // size for i in range(size)]
    if method.name == "metaprompt" and method.cfg.meta_split == "class":
        labels = split_covering_labels(method, size)
    device = method.device
    return Batch(torch.randn(size, 3, image_size, image_size, device=device), torch.tensor(labels, device=device),
                 (torch.arange(size) % SOURCE_DOMAINS).to(device))


def split_covering_labels(method: PromptMethod, size: int) -> list[int]:
    """Labels taken from the groups of the next class split in turn, so that no split is skipped (with
    the published 16 images over 100 classes every group is almost surely hit anyway)."""
    state = method.random_state()
    groups = method.class_groups()
    method.set_random_state(state)
    round_robin = [int(g[j]) for j in range(max(map(len, groups))) for g in groups if j < len(g)]
    return [round_robin[i % len(round_robin)] for i in range(size)]


def training_step(method: PromptMethod, batch: Batch) -> Callable[[], None]:
    """One ``forward_backward``; every call draws the same class split, so every run does the same work."""
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    state = method.random_state()

    def step() -> None:
        method.set_random_state(state)
        method.forward_backward(batch, optimizer)
    return step


@dataclass
class Measured:
    train_seconds: float
    train_flops: int
    train_peak: int
    eval_seconds: dict[int, float]
    """Seconds per test batch, by published class count."""
    eval_flops: dict[int, int]
    """FLOPs of one test batch, by published class count."""
    once_seconds: dict[int, float | None]
    """Seconds to compute the cached class text features on entering evaluation, by published class count
    (None: nothing is cached)."""


def measure(setting: Setting, clip: PromptCLIP, options: ComputeOptions, plan: Plan) -> Measured:
    sync = synchronizer(clip.device)
    with exact_context(clip, options.truncate_context):
        method = build(setting, clip, options, plan.train_classes)
        batch = training_batch(method, plan.batch(setting.train_batch, setting.min_batch), clip.image_size)
        if options.cache_image_features and method.frozen_image_encoder:
            batch.features = method.frozen_image_features(batch.images)  # what the view cache supplies
        step = training_step(method, batch)
        flops = flop_count(step)  # also the warm-up
        peak = peak_memory(step, clip.device)
        train = median_seconds(step, plan.repeats, sync)
        evals, eval_flops, once = {}, {}, {}
        for published, classes in plan.tests.items():
            method = build(setting, clip, options, classes)
            images = torch.randn(plan.batch(setting.test_batch), 3, clip.image_size, clip.image_size,
                                 device=clip.device)
            once[published], eval_flops[published], evals[published] = evaluation_cost(method, images, plan)
    return Measured(train, flops, peak, evals, eval_flops, once)


def evaluation_cost(method: PromptMethod, images: torch.Tensor, plan: Plan) -> tuple[float | None, int, float]:
    """Seconds to enter evaluation, which computes the cached class features (None when nothing is
    cached); FLOPs of one test batch (also the warm-up); seconds per test batch."""
    sync = synchronizer(method.device)
    sync()
    start = time.perf_counter()
    with method.evaluation():
        sync()
        caches = method.image_independent_text and method.options.cache_text_features
        once = time.perf_counter() - start if caches else None
        flops = flop_count(lambda: method.model_inference(images))
        per_batch = median_seconds(lambda: method.model_inference(images), plan.repeats, sync)
    return once, flops, per_batch


@contextlib.contextmanager
def text_checkpointing(clip: PromptCLIP, on: bool) -> Iterator[None]:
    before = clip.text_checkpointing
    clip.text_checkpointing = on
    try:
        yield
    finally:
        clip.text_checkpointing = before


def memory_option_rows(clip: PromptCLIP, classes: int, plan: Plan) -> list[tuple[str, ...]]:
    """The class text features of one method over ``classes`` classes under each memory option: peak memory
    of the evaluation pass (no gradient) and of the training pass (forward + backward), and the latter's time."""
    setting = Setting.from_preset(MEMORY_SETTING, SETTINGS[MEMORY_SETTING])
    chunk = max(1, classes // 4)
    variants = {"none": ComputeOptions(), f"class_chunk={chunk}": ComputeOptions(class_chunk=chunk),
                "text_checkpointing": ComputeOptions(text_checkpointing=True),
                "both": ComputeOptions(class_chunk=chunk, text_checkpointing=True)}
    table = []
    for label, options in variants.items():
        method = build(setting, clip, options, classes)
        with text_checkpointing(clip, options.text_checkpointing):
            with torch.no_grad():
                eval_peak = peak_memory(method.encode_classes, clip.device)

            def train() -> None:
                method.encode_classes().sum().backward()

            train_peak = peak_memory(train, clip.device)
            seconds = median_seconds(train, plan.repeats, synchronizer(clip.device))
        table.append((label, f"{eval_peak / MIB:.0f}", f"{train_peak / MIB:.0f}", f"{seconds:.3f}"))
    return table


# ------------------------------------------------------------------------------------------- report
def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def speedup(off: float, on: float) -> str:
    return f"{off / on:.1f}x faster"


def rows(setting: Setting, off: Measured, on: Measured, plan: Plan, peak_flops: float) -> list[tuple[str, ...]]:
    """(measure, off, on, comparison) rows of one setting."""
    def achieved(m: Measured) -> str:
        rate = m.train_flops / m.train_seconds
        return f"{rate / 1e9:.0f} ({100 * rate / peak_flops:.0f}%)"

    table = [("train step (s/batch)", f"{off.train_seconds:.3f}", f"{on.train_seconds:.3f}",
              speedup(off.train_seconds, on.train_seconds)),
             ("train step GFLOP", f"{off.train_flops / 1e9:.1f}", f"{on.train_flops / 1e9:.1f}",
              f"{off.train_flops / on.train_flops:.1f}x fewer"),
             ("achieved GFLOP/s (% of matmul)", achieved(off), achieved(on), ""),
             ("train peak memory (MiB)", f"{off.train_peak / MIB:.0f}", f"{on.train_peak / MIB:.0f}",
              f"{on.train_peak / off.train_peak:.2f}x")]
    images = plan.batch(setting.test_batch)
    for published, classes in plan.tests.items():
        a, b = off.eval_seconds[published], on.eval_seconds[published]
        table.append((f"eval {published}-class test [{classes} run] (img/s)", f"{images / a:.2f}",
                      f"{images / b:.2f}", speedup(a, b)))
        fa, fb = off.eval_flops[published], on.eval_flops[published]
        table.append(("  GFLOP per test batch", f"{fa / 1e9:.1f}", f"{fb / 1e9:.1f}", f"{fa / fb:.2f}x fewer"))
        if on.once_seconds[published] is not None:
            table.append(("  + class features once per eval (s)", "-", f"{on.once_seconds[published]:.3f}", ""))
    return table


def print_table(header: tuple[str, ...], table: list[tuple[str, ...]], left: int = 1) -> None:
    """Columns padded to their widest cell; the first ``left`` columns left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for r in [header, *table]:
        print("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def target_lines(off: Measured, on: Measured) -> list[str]:
    """The issue's targets for MetaPrompt base-to-new, met or missed (with the FLOP ratio beside the time's)."""
    ratios = {"train step": (off.train_seconds / on.train_seconds, off.train_flops / on.train_flops),
              **{f"eval {c}": (off.eval_seconds[c] / on.eval_seconds[c], off.eval_flops[c] / on.eval_flops[c])
                 for c in off.eval_seconds}}
    lines = []
    for name, goal in TARGET_SPEEDUPS.items():
        if name in ratios:
            faster, fewer = ratios[name]
            lines.append(f"  {name}: {faster:.2f}x faster, {fewer:.2f}x fewer FLOPs (target >= {goal:g}x faster): "
                         + ("met" if faster >= goal else "MISSED"))
    fraction = on.train_peak / off.train_peak
    verdict = "met" if fraction <= TARGET_MEMORY else "MISSED"
    lines.append(f"  train peak memory: {fraction:.2f} of off (target <= {TARGET_MEMORY:g}): {verdict}")
    return lines


# ------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default=MODEL, help=f"any model load_clip accepts (default {MODEL})")
    p.add_argument("--scale", type=Fraction, default=None,
                   help="multiply the published batch sizes and class counts (default: 1 on cuda, 1/16 on cpu)")
    p.add_argument("--train-classes", type=int, default=TRAIN_CLASSES,
                   help=f"classes of the training step before --scale (default {TRAIN_CLASSES})")
    p.add_argument("--test-classes", type=int, nargs="+", default=list(TEST_CLASSES),
                   help="class counts of the evaluation tests before --scale (default 100 1000)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per cell, median (default: 3 cuda, 1 cpu)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's); on cores shared with other jobs 1 avoids "
                        "every op waiting for a descheduled second thread")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    return p.parse_args()


def make_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    cuda = device.type == "cuda"
    scale = args.scale if args.scale is not None else (Fraction(1) if cuda else CPU_SCALE)
    return Plan(scale, scaled_classes(args.train_classes, scale),
                {c: scaled_classes(c, scale) for c in args.test_classes},
                args.repeats or (3 if cuda else 1))


def print_plan(settings: list[Setting], plan: Plan) -> None:
    if plan.scale != 1:
        print(f"REDUCED SIZES: published batch sizes and class counts x {plan.scale} (floors: {MIN_CLASSES} "
              "classes, 1 image, 2 for MetaPrompt) to finish in minutes; batch and classes shrink together, "
              "so the text : image work of a batch, and the ratios, stay close to the full size's")
    print(f"training step over {plan.train_classes} classes; tests over "
          + ", ".join(f"{c}" for c in plan.tests.values()) + " classes"
          + f"; per cell one FLOP-counting run (the warm-up), then {plan.repeats} timed run(s) (median)")
    for s in settings:
        print(f"  {s.label}: train batch {plan.batch(s.train_batch, s.min_batch)} (published {s.train_batch}), "
              f"test batch {plan.batch(s.test_batch)} (published {s.test_batch}), {s.method_config}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    device = torch.device(args.device)
    plan = make_plan(args, device)
    clip = load_clip(args.model, None, device=device, precision=args.precision)
    args.precision = clip.precision  # auto resolved: bf16 on a GPU, fp32 elsewhere
    dtype = AUTOCAST_DTYPES.get(args.precision, torch.float32)
    first_matmul = matmul_throughput(device, dtype)
    print(f"machine: {machine(device)}; torch {torch.__version__}; {args.model}, random weights, {args.precision}")
    settings = [Setting.from_preset(label, SETTINGS[label]) for label in args.settings]
    print_plan(settings, plan)
    measured = {s.label: tuple(measure(s, clip, MODES[mode], plan) for mode in ("off", "on")) for s in settings}
    last_matmul = matmul_throughput(device, dtype)
    peak_flops = max(first_matmul, last_matmul)
    print(f"matmul throughput ({MATMUL_SIZE[device.type]}^2, {args.precision}): {first_matmul / 1e9:.0f} GFLOP/s "
          f"before, {last_matmul / 1e9:.0f} after; the higher is the reference below")
    table, targets = [], []
    for setting in settings:
        off, on = measured[setting.label]
        table += [(setting.label if i == 0 else "", *r) for i, r in enumerate(rows(setting, off, on, plan, peak_flops))]
        if setting.label == "metaprompt-b2n":
            targets = target_lines(off, on)
    print()
    print_table(("setting", "measure", "shortcuts off", "shortcuts on", "on vs off"), table, left=2)
    if targets:
        print("\nMetaPrompt base-to-new, shortcuts on vs off:")
        print("\n".join(targets))
    classes = max(plan.tests.values())
    print(f"\nmemory options, {MEMORY_SETTING} class text features over {classes} classes (shortcuts on):")
    print_table(("option", "eval pass peak (MiB)", "train pass peak (MiB)", "train pass (s)"),
                memory_option_rows(clip, classes, plan))
    print(f"\ntotal {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
