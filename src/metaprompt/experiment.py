"""One run: read the task, load CLIP, train the method's prompts (resuming), save the artifact, evaluate.

A run folder holds ``config.yaml`` (the full resolved configuration), ``checkpoint.pt`` while training,
``prompts.safetensors`` (the artifact), ``metrics.json`` (with the per-epoch history: epoch, LR, loss,
accuracy), ``tensorboard/`` (Dassl's curves: train/loss, train/acc, train/lr per step, test/accuracy) and,
for a few-shot task, ``fewshot.json`` (the images it trains and validates on, relative to the dataset's
folder, and the classes that had fewer images than the shots; a resumed run takes its images from it). A finished run is never overwritten unless
asked; an unfinished one resumes from its checkpoint. The folder is written only once the run has
something to keep (its first checkpoint), so input found bad before that leaves it as it was.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch
import yaml

from . import __version__
from . import distributed as dist
from . import scalars
from .artifact import save_artifact
from .clip import load_clip
from .config import RunConfig, warn_departures
from .data.base import Datum, DatasetSplits
from .data.fewshot import draw_record, shortfall_summary, shortfalls
from .engine import CHECKPOINT_NAME, EvalResult, Trainer, evaluate, seed_everything
from .errors import MetapromptError
from .methods import ComputeOptions, PromptMethod, build_method, make_config
from .methods.base import accuracy
from .tasks import TaskSpec, build_task

ARTIFACT_NAME = "prompts.safetensors"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
FEWSHOT_NAME = "fewshot.json"


def is_finished(out: Path) -> bool:
    return (out / ARTIFACT_NAME).is_file() and (out / METRICS_NAME).is_file()


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (rank 0 only)."""
    if not dist.is_main():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def environment() -> dict:
    return {"metaprompt": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "processes": dist.world_size(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"}


def record(cfg: RunConfig, spec: TaskSpec) -> dict:
    """The configuration stored beside the results: everything needed to run it again."""
    return {"run": cfg.to_dict(), "task": dict(spec.__dict__)}


def check_run_folder(out: Path, stored: dict, overwrite: bool) -> None:
    """Refuse (writing nothing) to overwrite a finished run or to resume a run made with another
    configuration."""
    if out.exists() and not out.is_dir():
        raise MetapromptError(f"--out {out} is a file; expected a run folder")
    if overwrite:
        return
    if is_finished(out):
        raise MetapromptError(f"{out} holds a finished run; pass --overwrite to replace it")
    config_path = out / CONFIG_NAME
    if config_path.is_file() and stored_config(config_path) != stored:
        raise MetapromptError(f"{out} holds an unfinished run with a different configuration; "
                              "pass --overwrite to start over, or choose another --out")


def stored_config(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MetapromptError(f"{path} is not readable YAML ({err}); pass --overwrite to start over") from None


def start_run_folder(out: Path, stored: dict, overwrite: bool, task: DatasetSplits) -> None:
    """Create the run folder with its config.yaml and, for a drawn task, fewshot.json (rank 0), first
    removing an earlier run's files when ``overwrite``."""
    if not dist.is_main():
        return
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for name in (ARTIFACT_NAME, METRICS_NAME, CHECKPOINT_NAME, FEWSHOT_NAME):
            (out / name).unlink(missing_ok=True)
    tmp = out / f"{CONFIG_NAME}.tmp"
    tmp.write_text(yaml.safe_dump(stored, sort_keys=False))
    os.replace(tmp, out / CONFIG_NAME)
    if task.fewshot is not None:
        write_json(out / FEWSHOT_NAME, draw_record(task))


def run_task(spec: TaskSpec, out: Path, overwrite: bool, splits: DatasetSplits | None) -> DatasetSplits:
    """The run's task: the images its fewshot.json recorded when it resumes, else drawn anew."""
    path = out / FEWSHOT_NAME
    recorded = read_json(path) if spec.shots and not overwrite and path.is_file() else None
    return build_task(spec, splits=splits, recorded=recorded, source=path)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MetapromptError(f"{path}: unreadable ({err}); pass --overwrite to start the run over") from None


def shortfall_note(task: DatasetSplits) -> str:
    """One line naming the classes that had fewer training images than the shots ('' when none did)."""
    short = shortfalls(task)
    if not short:
        return ""
    listed = ", ".join(f"{s.classname}{f' ({s.domain})' if s.domain else ''} {s.images}" for s in short[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    return (f"{len(short)} class(es) had fewer than {task.fewshot.shots} training images and gave all they have "
            f"({sum(s.shots - s.images for s in short)} images short): {listed}{more}")


def build_run(cfg: RunConfig, task: DatasetSplits, device: str, options: ComputeOptions) -> PromptMethod:
    clip = load_clip(cfg.model, cfg.pretrained, device=device, precision=cfg.train.precision)
    clip.truncate_context = options.truncate_context
    clip.text_checkpointing = options.text_checkpointing
    return build_method(cfg.method, clip, task.classnames, make_config(cfg.method, cfg.method_config),
                        dataset=task.template, options=options)


class TrainedRun(NamedTuple):
    method: PromptMethod
    metrics: dict
    task: DatasetSplits


def train_run(cfg: RunConfig, spec: TaskSpec, out: str | Path, *, device: str = "cpu",
              options: ComputeOptions | None = None, progress: bool = True, overwrite: bool = False,
              skip_bad_images: bool = False, splits: DatasetSplits | None = None) -> TrainedRun:
    """Train (or resume) one run into ``out`` and evaluate it on the task's test split. ``splits`` is the
    dataset as read (read from ``spec`` when not given).

    Everything that can fail on bad input (config, data, model) is checked before anything is written;
    the run folder is created with the first checkpoint (or the artifact, when nothing is trained).
    ``overwrite`` starts over instead of resuming.
    """
    out = Path(out)
    options = options or ComputeOptions()
    task = run_task(spec, out, overwrite, splits)
    seed_everything(cfg.train.seed)
    method = build_run(cfg, task, device, options)
    stored = record(cfg, spec)
    check_run_folder(out, stored, overwrite)
    if dist.is_main():
        warn_departures(cfg)
        note = shortfall_note(task)
        if note:
            print(f"metaprompt: note: {note}", file=sys.stderr)
    start = time.perf_counter()
    trained_steps, skipped, history = 0, 0, []
    if method.trainable_parameters() and cfg.train.epochs > 0:
        trainer = Trainer(method, task.train, cfg.train, domains=task.domains, work_dir=out, progress=progress,
                          skip_bad_images=skip_bad_images,
                          before_first_save=lambda: start_run_folder(out, stored, overwrite, task))
        state = trainer.fit(resume=not overwrite)
        trained_steps, skipped, history = state.step, trainer.skipped_images, state.history
    else:
        start_run_folder(out, stored, overwrite, task)
    train_seconds = time.perf_counter() - start
    if dist.is_main():
        save_artifact(out / ARTIFACT_NAME, method)
    result = evaluate_items(method, task.test, cfg, progress, skip_bad_images)
    metrics = {"accuracy": result.accuracy, "num_test": len(result.labels), "num_classes": method.num_classes,
               "num_train": len(task.train), "train_steps": trained_steps, "train_seconds": train_seconds,
               "eval_seconds": result.seconds, "skipped_images": skipped + result.skipped_images,
               "shortfall": shortfall_summary(task), "history": history, "environment": environment()}
    if dist.is_main():
        scalars.write(out, [("test/accuracy", result.accuracy, cfg.train.epochs)])
    write_json(out / METRICS_NAME, metrics)
    dist.barrier()
    return TrainedRun(method, metrics, task)


def evaluate_items(method: PromptMethod, items: list[Datum], cfg: RunConfig, progress: bool,
                   skip_bad_images: bool, desc: str = "test") -> EvalResult:
    """Evaluation over all ``items``; with several processes each evaluates its share (when every process
    has one) and all receive the gathered logits."""
    sharded = dist.world_size() > 1 and len(items) >= dist.world_size()
    result = evaluate(method, dist.shard(items) if sharded else items, cfg.train.test_batch_size,
                      cfg.train.num_workers, progress=progress and dist.is_main(), skip_bad_images=skip_bad_images,
                      desc=desc)
    if not sharded:
        return result
    logits, labels = dist.gather_rows(result.logits), dist.gather_rows(result.labels)
    skipped = int(dist.global_sum(torch.tensor(result.skipped_images)).item())
    return EvalResult(accuracy(logits, labels), logits, labels, skipped, result.seconds)
