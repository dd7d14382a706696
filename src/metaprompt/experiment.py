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

import contextlib
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
import yaml

from . import distributed as dist
from . import scalars
from .artifact import save_artifact
from .checkpoint import CHECKPOINT_NAME
from .clip import load_clip
from .config import RunConfig, warn_departures
from .costs import peak_memory, reset_peak_memory, trainable_parameters, with_evaluation
from .dassl_checkpoint import load_released, origin, read_checkpoint
from .data.base import DatasetSplits
from .data.fewshot import draw_record, shortfall_summary, shortfalls
from .engine import Trainer, seed_everything
from .errors import MetapromptError
from .evaluation import EvalResult, class_details, evaluate_sharded, image_features
from .feature_store import FeatureStore
from .files import TEMPORARY_SUFFIX, atomic_write_text
from .methods import ComputeOptions, PromptMethod, build_method
from .runlog import provenance
from .selection import SNAPSHOT_DIR, Selection
from .tasks import TaskSpec, build_task

ARTIFACT_NAME = "prompts.safetensors"
CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.json"
FEWSHOT_NAME = "fewshot.json"
RUN_FILES = (ARTIFACT_NAME, METRICS_NAME, CHECKPOINT_NAME, FEWSHOT_NAME, CONFIG_NAME, SNAPSHOT_DIR)
"""What a run writes in its folder (besides tensorboard/ and log.txt); epochs/ is a folder."""


def is_finished(out: Path) -> bool:
    return (out / ARTIFACT_NAME).is_file() and (out / METRICS_NAME).is_file()


def write_json(path: Path, data: dict) -> None:
    """Atomic JSON write (rank 0 only)."""
    if dist.is_main():
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict:
    """A JSON file a run wrote; a damaged one is an error naming it (ValueError covers bad bytes and bad JSON)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MetapromptError(f"{path}: unreadable ({' '.join(str(err).split())}); expected the JSON a run "
                              "writes: delete the run folder (or pass --overwrite to train) to start it over") from None


def environment() -> dict:
    """Where and by what a run was made: the command line, versions and commit (see :func:`runlog.provenance`),
    the processes and the device."""
    return {**provenance(), "torch": torch.__version__, "processes": dist.world_size(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"}


def record(cfg: RunConfig, spec: TaskSpec, released: Path | None = None) -> dict:
    """The configuration stored beside the results: everything needed to run it again (the task's shots and
    seed are the run's ``train.shots`` and ``train.seed``; ``released``: the checkpoint evaluated instead of
    training)."""
    return {"run": cfg.to_dict(), "task": dict(spec.__dict__),
            **({"released_checkpoint": str(released)} if released is not None else {})}


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


def finished_metrics(out: str | Path, cfg: RunConfig, spec: TaskSpec) -> dict | None:
    """The metrics of the finished run of this configuration in ``out`` (None when it holds none); a finished
    run of another configuration is an error naming the folder."""
    out = Path(out)
    if not is_finished(out):
        return None
    config_path = out / CONFIG_NAME
    if not config_path.is_file() or stored_config(config_path) != record(cfg, spec):
        raise MetapromptError(f"{out} holds a finished run of another configuration (see its {CONFIG_NAME}); "
                              "choose another --out, or pass --overwrite to replace it")
    return read_json(out / METRICS_NAME)


def remove_stale_temporaries(out: Path) -> None:
    """Temporary files that an interrupted atomic write left in a run folder (only this run writes there)."""
    if out.is_dir():
        for path in out.glob(f"*{TEMPORARY_SUFFIX}"):
            path.unlink(missing_ok=True)


def stored_config(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as err:
        raise MetapromptError(f"{path} is not readable YAML ({err}); pass --overwrite to start over") from None


@contextlib.contextmanager
def run_folder(out: Path, stored: dict, overwrite: bool, task: DatasetSplits) -> Iterator[Path]:
    """The run folder with its config.yaml and, for a drawn task, fewshot.json (written by rank 0).

    With ``overwrite`` an earlier run's files are moved aside first. If the body fails before the run has a
    checkpoint or an artifact, the folder is put back as it was: removed when it did not exist, the earlier
    run's files restored otherwise. Once it has one, the earlier run's files are deleted."""
    if not dist.is_main():
        yield out
        return
    existed = out.exists()
    aside = out / ".replaced"
    if overwrite and existed:
        aside.mkdir(exist_ok=True)
        for name in RUN_FILES:
            if (out / name).exists():
                (out / name).replace(aside / name)
    atomic_write_text(out / CONFIG_NAME, yaml.safe_dump(stored, sort_keys=False))
    if task.fewshot is not None:
        write_json(out / FEWSHOT_NAME, draw_record(task))
    try:
        yield out
    except BaseException:
        if not any((out / name).is_file() for name in (CHECKPOINT_NAME, ARTIFACT_NAME)):
            _roll_back(out, existed, aside)
        raise
    finally:
        if aside.exists() and (out / CONFIG_NAME).is_file():
            shutil.rmtree(aside)


def _roll_back(out: Path, existed: bool, aside: Path) -> None:
    """Put ``out`` back as it was before :func:`run_folder` (nothing kept was written there since)."""
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for name in RUN_FILES:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    if aside.exists():
        for path in aside.iterdir():
            path.replace(out / path.name)
        aside.rmdir()


def run_task(spec: TaskSpec, cfg: RunConfig, out: Path, overwrite: bool, splits: DatasetSplits | None) -> DatasetSplits:
    """The run's task: the images its fewshot.json recorded when it resumes, else drawn anew (``cfg.train``'s
    shots and seed)."""
    path = out / FEWSHOT_NAME
    shots, seed = cfg.train.shots, cfg.train.seed
    recorded = read_json(path) if shots and not overwrite and path.is_file() else None
    return build_task(spec, shots, seed, splits=splits, recorded=recorded, source=path)


def shortfall_note(task: DatasetSplits) -> str:
    """One line naming the classes that had fewer training images than the shots ('' when none did)."""
    short = shortfalls(task)
    if not short:
        return ""
    listed = ", ".join(f"{s.classname}{f' ({s.domain})' if s.domain else ''} {s.images}" for s in short[:5])
    more = f" and {len(short) - 5} more" if len(short) > 5 else ""
    return (f"{len(short)} class(es) had fewer than {task.fewshot.shots} training images and gave all they have "
            f"({sum(s.shots - s.images for s in short)} images short): {listed}{more}")


def build_method_for_run(cfg: RunConfig, task: DatasetSplits, device: str, options: ComputeOptions,
                         store: FeatureStore | None = None) -> PromptMethod:
    """The run's CLIP (model, weights, precision) and its method for the task's classes and templates; its
    hand-crafted classifiers from ``store`` when given."""
    clip = load_clip(cfg.model, cfg.pretrained, device=device, precision=cfg.train.precision)
    clip.feature_store = store
    return build_method(cfg.method, clip, task.classnames, cfg.method_config, dataset=task.template, options=options)


def fit_closed_form(method: PromptMethod, task: DatasetSplits, cfg: RunConfig, progress: bool,
                    skip_bad_images: bool) -> dict:
    """Fit a closed-form method (the linear probe) on the task's training images, choosing its
    hyper-parameters on the validation images; what it chose, for metrics.json."""
    if not task.val:
        raise MetapromptError(f"{method.name} chooses its regularisation on the validation split, and this task "
                              f"({task.name}) has none")
    batch, workers = cfg.train.test_batch_size, cfg.train.num_workers
    train = image_features(method, task.train, batch, workers, progress, skip_bad_images, desc="train features")
    val = image_features(method, task.val, batch, workers, progress, skip_bad_images, desc="val features")
    fit = method.fit(train, val)
    return {"c": fit.c, "val_accuracy": fit.val_accuracy, "tried": [list(pair) for pair in fit.tried]}


def run_cost(method: PromptMethod, trainer: Trainer | None, train_seconds: float, result: EvalResult) -> dict:
    """What training and testing the run cost (see :mod:`metaprompt.costs`); throughput counts every process."""
    images = trainer.images_trained * dist.world_size() if trainer else 0
    flops = trainer.step_flops if trainer else None
    training = {"trainable_parameters": trainable_parameters(method),
                "train_step_gflop": flops * dist.world_size() / 1e9 if flops is not None else None,
                "train_seconds": train_seconds, "train_images_per_second": images / train_seconds if images else None,
                **peak_memory(method.device)}
    return evaluation_cost(training, result)


def evaluation_cost(cost: dict | None, result: EvalResult) -> dict:
    """``cost`` with the evaluation ``result`` counted (see :func:`metaprompt.costs.with_evaluation`)."""
    return with_evaluation(cost, result.seconds, len(result.labels), result.from_store)


class TrainedRun(NamedTuple):
    method: PromptMethod
    metrics: dict
    task: DatasetSplits


def train_run(cfg: RunConfig, spec: TaskSpec, out: str | Path, *, device: str = "cpu",
              options: ComputeOptions | None = None, progress: bool | None = True, overwrite: bool = False,
              skip_bad_images: bool = False, splits: DatasetSplits | None = None,
              store: FeatureStore | None = None, keep_checkpoint: bool = False,
              released: Path | None = None) -> TrainedRun:
    """Train (or resume) one run into ``out`` and evaluate it on the task's test split. ``splits`` is the
    dataset as read (read from ``spec`` when not given). ``released``: a released trainer's checkpoint whose
    prompts the run takes instead of training (:mod:`metaprompt.dassl_checkpoint`), recorded as such.

    Everything that can fail on bad input (config, data, model) is checked before anything is written; a
    failure before the first checkpoint leaves ``out`` as it was (see :func:`run_folder`). ``overwrite``
    starts over instead of resuming. ``store``: the sweep's frozen-feature store (see
    :mod:`metaprompt.feature_store`), or None. The checkpoint is deleted once the run is finished (its artifact
    and metrics written) unless ``keep_checkpoint``.
    """
    out = Path(out)
    task = run_task(spec, cfg, out, overwrite, splits)
    seed_everything(cfg.train.seed)
    method = build_method_for_run(cfg, task, device, options or ComputeOptions(), store)
    reset_peak_memory(method.device)
    stored = record(cfg, spec, released)
    check_run_folder(out, stored, overwrite)
    checkpoint = read_checkpoint(released) if released is not None else None
    if dist.is_main():
        warn_departures(cfg)
        note = shortfall_note(task)
        if note:
            print(f"metaprompt: note: {note}", file=sys.stderr)
    if dist.is_main():
        remove_stale_temporaries(out)
    with run_folder(out, stored, overwrite, task):
        start = time.perf_counter()
        trained_steps, skipped, history, trainer, selected = 0, 0, [], None, {"final_model": "last"}
        if checkpoint is not None:
            load_released(method, checkpoint)
        elif method.closed_form:
            history = [fit_closed_form(method, task, cfg, progress, skip_bad_images)]
        elif method.trainable_parameters() and cfg.train.epochs > 0:
            selection = Selection(method, task, cfg.train, out, skip_bad_images)
            trainer = Trainer(method, task.train, cfg.train, domains=task.domains, work_dir=out, progress=progress,
                              skip_bad_images=skip_bad_images,
                              after_epoch=selection.after_epoch if selection.active else None)
            state = trainer.fit(resume=not overwrite)
            trained_steps, skipped, history = state.step, trainer.skipped_images, state.history
            selected = selection.finish()
        train_seconds = time.perf_counter() - start
        if dist.is_main():
            imported = {"imported_from": json.dumps(origin(checkpoint))} if checkpoint is not None else None
            save_artifact(out / ARTIFACT_NAME, method, extra=imported)
    result = evaluate_sharded(method, task.test, cfg.train.test_batch_size, cfg.train.num_workers, progress,
                              skip_bad_images, store=store)
    metrics = {"accuracy": result.accuracy, "num_test": len(result.labels), "num_classes": method.num_classes,
               "num_train": len(task.train), "train_steps": trained_steps, "train_seconds": train_seconds,
               "eval_seconds": result.seconds, "skipped_images": skipped + result.skipped_images,
               "shortfall": shortfall_summary(task), "history": history, "precision": method.clip.precision,
               "cost": run_cost(method, trainer, train_seconds, result), "environment": environment(),
               "details": class_details(result, method.classnames), "selection": selected,
               **({"imported_from": origin(checkpoint)} if checkpoint is not None else {})}
    if dist.is_main():
        scalars.write(out, [("test/accuracy", result.accuracy, cfg.train.epochs)])
    write_json(out / METRICS_NAME, metrics)
    if dist.is_main() and not keep_checkpoint:
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)
    dist.barrier()
    return TrainedRun(method, metrics, task)
