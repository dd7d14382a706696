"""One run: read the task, load CLIP, train the method's prompts (resuming), save the artifact, evaluate.

A run folder holds ``config.yaml`` (the full resolved configuration), ``checkpoint.pt`` while training,
``prompts.safetensors`` (the artifact) and ``metrics.json``. A finished run is never overwritten unless
asked; an unfinished one resumes from its checkpoint.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch
import yaml

from . import __version__
from . import distributed as dist
from .artifact import save_artifact
from .clip import load_clip
from .config import RunConfig
from .data.base import Datum, DatasetSplits
from .engine import CHECKPOINT_NAME, EvalResult, Trainer, evaluate, seed_everything
from .errors import MetapromptError
from .methods import ComputeOptions, PromptMethod, build_method, make_config
from .tasks import TaskSpec, build_task

ARTIFACT_NAME = "prompts.safetensors"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"


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


def prepare_run_folder(out: Path, stored: dict, overwrite: bool) -> None:
    """Refuse to overwrite a finished run or to resume a run made with another configuration."""
    if is_finished(out) and not overwrite:
        raise MetapromptError(f"{out} holds a finished run; pass --overwrite to replace it")
    config_path = out / CONFIG_NAME
    if overwrite:
        for name in (ARTIFACT_NAME, METRICS_NAME, CHECKPOINT_NAME):
            if dist.is_main():
                (out / name).unlink(missing_ok=True)
    elif config_path.is_file() and yaml.safe_load(config_path.read_text()) != stored:
        raise MetapromptError(f"{out} holds an unfinished run with a different configuration; "
                              "pass --overwrite to start over, or choose another --out")
    if dist.is_main():
        out.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(stored, sort_keys=False))
    dist.barrier()


def build_run(cfg: RunConfig, task: DatasetSplits, device: str, options: ComputeOptions) -> PromptMethod:
    clip = load_clip(cfg.model, cfg.pretrained, device=device, precision=cfg.train.precision)
    clip.truncate_context = options.truncate_context
    clip.text_checkpointing = options.text_checkpointing
    return build_method(cfg.method, clip, task.classnames, make_config(cfg.method, cfg.method_config),
                        dataset=task.template, options=options)


def train_run(cfg: RunConfig, spec: TaskSpec, out: str | Path, *, device: str = "cpu",
              options: ComputeOptions | None = None, progress: bool = True, overwrite: bool = False,
              skip_bad_images: bool = False, task: DatasetSplits | None = None) -> tuple[PromptMethod, dict]:
    """Train (or resume) one run into ``out`` and evaluate it on the task's test split.

    Everything that can fail on bad input (config, data, model) is checked before anything is written.
    """
    out = Path(out)
    options = options or ComputeOptions()
    task = task or build_task(spec, cache_dir=None)
    method = build_run(cfg, task, device, options)
    prepare_run_folder(out, record(cfg, spec), overwrite)
    seed_everything(cfg.train.seed)
    start = time.perf_counter()
    trained_steps, skipped = 0, 0
    if method.trainable_parameters() and cfg.train.epochs > 0:
        trainer = Trainer(method, task.train, cfg.train, domains=task.domains, work_dir=out, progress=progress,
                          skip_bad_images=skip_bad_images)
        state = trainer.fit()
        trained_steps, skipped = state.step, trainer.skipped_images
    train_seconds = time.perf_counter() - start
    if dist.is_main():
        save_artifact(out / ARTIFACT_NAME, method)
    result = evaluate_items(method, task.test, cfg, progress, skip_bad_images)
    metrics = {"accuracy": result.accuracy, "num_test": len(result.labels), "num_classes": method.num_classes,
               "num_train": len(task.train), "train_steps": trained_steps, "train_seconds": train_seconds,
               "eval_seconds": result.seconds, "skipped_images": skipped + result.skipped_images,
               "environment": environment()}
    write_json(out / METRICS_NAME, metrics)
    dist.barrier()
    return method, metrics


def evaluate_items(method: PromptMethod, items: list[Datum], cfg: RunConfig, progress: bool,
                   skip_bad_images: bool, desc: str = "test") -> EvalResult:
    return evaluate(method, items, cfg.train.test_batch_size, cfg.train.num_workers,
                    progress=progress and dist.is_main(), skip_bad_images=skip_bad_images, desc=desc)
