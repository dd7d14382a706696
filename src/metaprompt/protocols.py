"""The field's benchmark protocols as sweeps of runs that resume (method doc section 5): base-to-new
generalisation, domain generalisation (leave one domain out), cross-dataset transfer, and CoOp's few-shot
classification over all classes.

Every run has a folder of its own. Training runs hold what :func:`metaprompt.experiment.train_run` writes
(``config.yaml``, ``prompts.safetensors``, ``metrics.json``); every run holds ``settings.json`` (what makes a
result there this run's, see :func:`check_run_settings`), ``log.txt`` and ``result.json`` (metrics, seed, dataset,
method, settings, versions, wall time), written last::

    OUT/base2new/<name>/<dataset>/seed<k>/
    OUT/dg/<name>/<dataset>/shots<k>/<target domain>/seed<k>/
    OUT/xd/<name>/<source>/<dataset>/seed<k>/       (dataset == source: the training run)
    OUT/fewshot/<name>/<dataset>/shots<k>/seed<k>/

``<name>`` is the method unless another is given (to compare variants of one method). A run with a
``result.json`` is finished: it is skipped without reading data or loading a model. Any other run is
(re)started, and ``train_run`` resumes it from its checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

from . import distributed as dist
from . import scalars
from .artifact import read_artifact
from .checkpoint import CHECKPOINT_NAME
from .benchmark import DG_DOMAINS, RESULT_NAME, harmonic_mean, read_result
from .config import RunConfig
from .data.base import DatasetSplits
from .data.descriptor import DESCRIPTORS, descriptor_settings
from .data.fewshot import dg_source_test
from .data.registry import (DATASET_FOLDERS, DATASETS, build_dataset, describe_folders, folder_of, known_datasets,
                            register_plugins)
from .errors import MetapromptError
from .costs import trainable_parameters
from .dassl_checkpoint import LEARNER_FOLDERS, find_checkpoint
from .evaluation import EvalResult, class_details, evaluate_sharded
from .experiment import (ARTIFACT_NAME, METRICS_NAME, TrainedRun, build_method_for_run, environment,
                         evaluation_cost, is_finished, read_json, run_task, train_run, write_json)
from .feature_store import FeatureStore
from .leases import STALE_SECONDS, SWEEP_DIR, Claim, Holder, Leases
from .methods import ComputeOptions, PromptMethod
from .plugins import DATASET_GROUP, plugin_names
from .runlog import run_log
from .tasks import TaskSpec, build_task


@dataclass(frozen=True)
class Runtime:
    """Where and how the runs execute; nothing here changes a result but ``released``, which replaces training
    by a released trainer's checkpoint (and names the runs ``<method>-released``)."""

    device: str = "cpu"
    options: ComputeOptions = field(default_factory=ComputeOptions)
    progress: bool | None = False
    """Progress bars inside each run (on a terminal; a line per epoch elsewhere, and with False); None: quiet."""
    skip_bad_images: bool = False
    log: Callable[[str], None] = print
    """Receives one line per run: what it was and whether it was done or skipped."""
    lease_timeout: float = STALE_SECONDS
    """A run claimed by a worker whose lease was not refreshed for this long is taken over (see leases)."""
    poll_seconds: float = 2.0
    """How often a worker with nothing to claim looks again at the runs other workers hold."""
    feature_store: bool = True
    """Share frozen features between the sweep's runs and workers (results are the same without)."""
    store: FeatureStore | None = None
    """The sweep's store (set by the protocol runner from ``feature_store`` and the output folder)."""
    keep_checkpoint: bool = False
    """Keep each finished run's checkpoint.pt (deleted otherwise)."""
    released: str | None = None
    """Evaluate released trainers' checkpoints instead of training: a path with ``{dataset}``, ``{seed}`` and
    optionally ``{shots}`` / ``{target}``, each run's output folder (or file) of the released code
    (:func:`metaprompt.dassl_checkpoint.find_checkpoint`)."""

    def for_sweep(self, out: str | Path) -> "Runtime":
        """This runtime with the store of the sweep into ``out``."""
        if not self.feature_store:
            return self
        return replace(self, store=FeatureStore(Path(out) / SWEEP_DIR / "features"))


@dataclass(frozen=True)
class Outcome:
    """What a run measured, and how many classes had fewer training images than its shots."""

    metrics: dict[str, float]
    shortfall: dict | None = None
    """``{"classes": k, "missing_images": m}`` of a drawn run (see data.fewshot.shortfall_summary)."""
    cost: dict | None = None
    """What the run cost (see :func:`metaprompt.experiment.run_cost`), its every evaluation counted."""
    details: dict | None = None
    """Per evaluation (``test``; ``base`` / ``new``; ``source``): per-class accuracy, macro-F1, confusion matrix
    (see :func:`metaprompt.evaluation.class_details`)."""

    def summary(self) -> str:
        text = ", ".join(f"{key} {value:.2f}" for key, value in self.metrics.items())
        if self.shortfall and self.shortfall["classes"]:
            text += (f"; {self.shortfall['classes']} class(es) had fewer images than the shots, "
                     f"{self.shortfall['missing_images']} short")
        return text


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep. ``execute`` computes its outcome; ``record`` goes into its result.json with it."""

    label: str
    folder: Path
    dataset: str
    """The dataset it reads (checked for before the sweep starts)."""
    record: dict
    execute: Callable[[], Outcome]
    after: Path | None = None
    """A run folder whose result this run needs first (a cross-dataset target needs its source run)."""


def run_base2new(cfg: RunConfig, datasets: list[str], seeds: list[int], root: str | Path, out: str | Path,
                 runtime: Runtime | None = None, name: str | None = None) -> list[dict]:
    """Per dataset and seed: train on the base classes, then test base images over the base classes and
    new images over the new classes. Returns every run's result (metrics ``base``, ``new``, ``hm``)."""
    runtime, name = _started(runtime, out, name, cfg)
    read = _dataset_reader(root)
    runs = []
    for dataset in datasets:
        for seed in seeds:
            seeded = with_seed(cfg.for_task(dataset), seed)
            spec = TaskSpec(dataset, str(root), classes="base")
            folder = Path(out) / "base2new" / name / dataset / f"seed{seed}"
            runs.append(SweepRun(f"base2new {name} {dataset} seed {seed}", folder, dataset,
                            _record("base2new", name, seeded, dataset, sweep=cfg),
                            lambda c=seeded, s=spec, f=folder: _base_to_new(c, s, f, read(s.dataset), runtime)))
    return sweep(runs, root, runtime, out)


def run_dg(cfg: RunConfig, dataset: str, seeds: list[int], root: str | Path, out: str | Path,
           runtime: Runtime | None = None, name: str | None = None, targets: list[str] | None = None,
           source_accuracy: bool = False) -> list[dict]:
    """Leave one domain out, for each target domain (all of the dataset's unless ``targets``) and seed:
    train on ``cfg.train.shots`` shots per class per source domain, test on the target domain (metric
    ``accuracy``). With ``source_accuracy``, also test on the source domains' test images that were not
    trained on (metric ``source``), to show how much of a gain stays on the domains it was tuned on."""
    runtime, name = _started(runtime, out, name, cfg)
    read = _dataset_reader(root)
    domains = _domains(dataset, root, read)
    targets = targets or list(domains)
    unknown = sorted(set(targets) - set(domains))
    if unknown:
        raise MetapromptError(f"{dataset}: unknown target domain(s) {', '.join(unknown)}; "
                              f"expected some of: {', '.join(domains)}")
    shots = cfg.train.shots
    runs = []
    for target in targets:
        for seed in seeds:
            seeded = with_seed(cfg.for_task(dataset), seed)
            spec = TaskSpec(dataset, str(root), target=target)
            folder = Path(out) / "dg" / name / dataset / f"shots{shots}" / target / f"seed{seed}"
            runs.append(SweepRun(f"dg {name} {dataset} {shots}-shot target {target} seed {seed}", folder, dataset,
                            _record("dg", name, seeded, dataset, {"source_accuracy": source_accuracy}, sweep=cfg,
                                    target=target),
                            lambda c=seeded, s=spec, f=folder: _leave_one_domain_out(
                                c, s, f, read(s.dataset), runtime, source_accuracy)))
    return sweep(runs, root, runtime, out)


def run_fewshot(cfg: RunConfig, datasets: list[str], shots: list[int], seeds: list[int], root: str | Path,
                out: str | Path, runtime: Runtime | None = None, name: str | None = None) -> list[dict]:
    """CoOp's few-shot classification: per dataset, shot count and seed, train on ``shots`` images of every
    class (the preset's variant for that shot count: CoOp's schedule per shots), test on the whole test split
    over all classes (metric ``accuracy``)."""
    runtime, name = _started(runtime, out, name, cfg)
    read = _dataset_reader(root)
    runs = []
    for dataset in datasets:
        for k in shots:
            for seed in seeds:
                seeded = with_seed(cfg.with_values({"train.shots": k}, user=False).for_task(dataset), seed)
                spec = TaskSpec(dataset, str(root), classes="all")
                folder = Path(out) / "fewshot" / name / dataset / f"shots{k}" / f"seed{seed}"
                runs.append(SweepRun(f"fewshot {name} {dataset} {k}-shot seed {seed}", folder, dataset,
                                     _record("fewshot", name, seeded, dataset, sweep=cfg),
                                     lambda c=seeded, s=spec, f=folder: _all_classes(c, s, f, read(s.dataset), runtime)))
    return sweep(runs, root, runtime, out)


def run_xd(cfg: RunConfig, source: str, targets: list[str], seeds: list[int], root: str | Path, out: str | Path,
           runtime: Runtime | None = None, name: str | None = None) -> list[dict]:
    """Per seed: train once on ``source`` (all classes), then test that one artifact on each target
    dataset's test split over the target's classes."""
    runtime, name = _started(runtime, out, name, cfg)
    if source in targets:
        raise MetapromptError(f"--targets: {source} is the source dataset (trained on and tested in its own run); "
                              "expected target datasets other than the source")
    read = _dataset_reader(root)
    runs = []
    for seed in seeds:
        seeded = with_seed(cfg.for_task(source), seed)
        spec = TaskSpec(source, str(root), classes="all")
        base = Path(out) / "xd" / name / source
        source_folder = base / source / f"seed{seed}"
        model = _SourceModel(seeded, source_folder, runtime)
        runs.append(SweepRun(f"xd {name} {source} (source) seed {seed}", source_folder, source,
                        _record("xd", name, seeded, source, {"source": source}, sweep=cfg, source=source),
                        lambda s=spec, m=model: m.train_source(s, read(s.dataset))))
        for target in targets:
            folder = base / target / f"seed{seed}"
            artifact = os.path.relpath(source_folder / ARTIFACT_NAME, folder)
            runs.append(SweepRun(f"xd {name} {source} -> {target} seed {seed}", folder, target,
                            _record("xd", name, seeded, target, {"source": source}, sweep=cfg, source=source,
                                    artifact=artifact),
                            lambda t=target, m=model: m.transfer(build_task(TaskSpec(t, str(root)), splits=read(t))),
                            after=source_folder))
    return sweep(runs, root, runtime, out)


def sweep(runs: list[SweepRun], root: str | Path, runtime: Runtime, out: str | Path) -> list[dict]:
    """Execute the unfinished runs, writing each one's result.json, together with any other worker running
    the same sweep into the same folder (see :mod:`metaprompt.leases`): each run is claimed before it starts,
    runs other workers hold are left to them (and taken over when their worker is gone), finished ones are
    skipped. A run folder that holds another run's settings stops the sweep before anything runs (see
    :func:`check_run_settings`). Returns every run's result, once all are finished."""
    _check_distinct(runs)
    todo = [i for i, run in enumerate(runs) if not (run.folder / RESULT_NAME).is_file()]
    _check_data(root, {runs[i].dataset for i in todo})
    leases, error = None, None
    if dist.is_main():
        try:
            for run in runs:
                check_run_settings(run)
            leases = Leases(out, stale_after=runtime.lease_timeout)
        except MetapromptError as err:
            error = err
    dist.fail_together(error)
    for i in sorted(set(range(len(runs))) - set(todo)):
        runtime.log(f"[{i + 1}/{len(runs)}] {runs[i].label}: skipped (finished)")
    waiting_on: tuple = ()
    while True:
        index, claim, held = _next_run(runs, todo, leases)
        if index == DONE:
            break
        if index == WAIT:
            if held != waiting_on:
                runtime.log(f"waiting for {len(held)} run(s) other workers hold: {'; '.join(held)}")
                waiting_on = held
            time.sleep(runtime.poll_seconds)
            continue
        waiting_on = ()
        run = runs[index]
        prefix = f"[{index + 1}/{len(runs)}] {run.label}"
        if claim is not None and claim.taken_from is not None:
            runtime.log(f"{prefix}: taken over from {claim.taken_from.name} (gone), resuming")
        with claim or contextlib.nullcontext():
            _execute(run, prefix, runtime)
        if index in todo:
            todo.remove(index)
    return [read_result(run.folder / RESULT_NAME) for run in runs]


DONE, WAIT = -1, -2


def _next_run(runs: list[SweepRun], todo: list[int], leases: Leases | None) -> tuple[int, Claim | None, tuple]:
    """The next run this worker executes and its claim, or DONE, or WAIT (with what the others hold). Rank 0
    decides for all of a torchrun launch (and keeps ``todo``; the other ranks follow its decisions)."""
    index, claim, held = DONE, None, []
    if dist.is_main():
        for i in list(todo):
            run = runs[i]
            if (run.folder / RESULT_NAME).is_file():
                todo.remove(i)
                continue
            if run.after is not None and not (run.after / RESULT_NAME).is_file():
                held.append(f"{run.label} (waits for its source run)")
                continue
            got = leases.claim(run.folder)
            if isinstance(got, Holder):
                held.append(f"{run.label} ({got.name})")
                continue
            if (run.folder / RESULT_NAME).is_file():  # finished between the look and the claim
                got.release()
                todo.remove(i)
                continue
            index, claim = i, got
            break
        else:
            index = WAIT if held else DONE
    return dist.from_main(index), claim, tuple(held)


def _execute(run: SweepRun, prefix: str, runtime: Runtime) -> None:
    start = time.perf_counter()
    with run_log(run.folder, dist.is_main()):
        runtime.log(f"{prefix}: started")
        with _settings_recorded(run):
            outcome = run.execute()
        wall = time.perf_counter() - start
        result = {**run.record, "metrics": outcome.metrics, "shortfall": outcome.shortfall, "wall_seconds": wall,
                  "cost": outcome.cost, "details": outcome.details, "environment": environment()}
        write_json(run.folder / RESULT_NAME, result)
        dist.barrier()
        runtime.log(f"{prefix}: done in {wall:.0f} s ({outcome.summary()})")


SETTINGS_NAME = "settings.json"
KEPT_FILES = (CHECKPOINT_NAME, ARTIFACT_NAME, RESULT_NAME)
"""A run folder holding one of these has something to keep: its settings stay with it."""
IGNORED_SETTINGS = ("train.seed", "train.num_workers", "train.test_batch_size", "train.checkpoint_freq",
                    "train.keep_checkpoints")
"""Settings a run folder's path already keeps apart (the seed) or that change no number."""


def run_settings(cfg: RunConfig, options: dict | None = None, protocol: str = "") -> dict:
    """What makes a result this run's result: the run config (flattened, less :data:`IGNORED_SETTINGS`) and
    the protocol's own options, as JSON reads them back (tuples as lists)."""
    flat = {key: value for key, value in _flatten(cfg.to_dict()).items() if key not in IGNORED_SETTINGS}
    flat.update({f"{protocol}.{key}": value for key, value in (options or {}).items()})
    return json.loads(json.dumps(flat))


def check_run_settings(run: SweepRun) -> None:
    """Refuse to run into a folder that holds (or held) a run with other settings, naming the folder and the
    first setting that differs. A folder with no settings recorded (an older version's) is taken as is."""
    stored = _stored_settings(run.folder)
    if stored is None:
        return
    for key in sorted(set(stored) | set(run.record["settings"])):
        there, here = stored.get(key, "(unset)"), run.record["settings"].get(key, "(unset)")
        if there != here:
            raise MetapromptError(
                f"{run.folder} holds a run with other settings ({key} is {there!r} there, {here!r} in this "
                f"command); pass another --out, or --name to keep both, or delete that folder to run it again")


def _stored_settings(folder: Path) -> dict | None:
    for path in (folder / SETTINGS_NAME, folder / RESULT_NAME):
        if path.is_file():
            stored = read_json(path)
            if not isinstance(stored, dict):
                raise MetapromptError(f"{path}: expected a JSON object, found {type(stored).__name__}; "
                                      "delete the run folder to run it again")
            if path.name == SETTINGS_NAME:
                return stored
            return stored.get("settings") if isinstance(stored.get("settings"), dict) else None
    return None


@contextlib.contextmanager
def _settings_recorded(run: SweepRun) -> Iterator[None]:
    """The run's settings in its folder while it executes and after; taken away again (with the folder, when
    nothing else is in it) when the run fails before it has a checkpoint, an artifact or a result, so that
    the corrected command can run there."""
    path = run.folder / SETTINGS_NAME
    if dist.is_main():
        run.folder.mkdir(parents=True, exist_ok=True)
        write_json(path, run.record["settings"])
    try:
        yield
    except BaseException:
        if dist.is_main() and not any((run.folder / name).is_file() for name in KEPT_FILES):
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run.folder.rmdir()
        raise


def _check_distinct(runs: list[SweepRun]) -> None:
    """Two runs of one command into one folder (a seed or a target given twice) would be one run counted twice."""
    seen: dict[Path, str] = {}
    for run in runs:
        if run.folder in seen:
            raise MetapromptError(f"{run.label} is asked for twice (a seed, target or dataset listed more than "
                                  "once); expected each once")
        seen[run.folder] = run.label


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and key in ("train", "method_config"):
            flat.update(_flatten(value, ("method." if key == "method_config" else "train.")))
        else:
            flat[name] = value
    return flat


def _started(runtime: Runtime | None, out: str | Path, name: str | None, cfg: RunConfig) -> tuple[Runtime, str]:
    """The sweep's runtime (with its feature store) and its runs' name (``<method>-released`` by default for
    released checkpoints, which are not this project's training)."""
    runtime = (runtime or Runtime()).for_sweep(out)
    if runtime.released is not None:
        if cfg.method not in LEARNER_FOLDERS:
            raise MetapromptError(f"--released-checkpoints with --method {cfg.method}: expected a method with a released "
                                  f"prompt trainer, one of {', '.join(LEARNER_FOLDERS)}")
        released_path(runtime.released, cfg, TaskSpec("dataset", ""), check=False)  # the pattern, before anything
    return runtime, run_name(name, cfg, released=runtime.released is not None)


def run_name(name: str | None, cfg: RunConfig, released: bool = False) -> str:
    """The name of a sweep's runs in folders and tables: ``name``, a plain folder name, or the method."""
    if name is None:
        return f"{cfg.method}-released" if released else cfg.method
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or not name.isprintable():
        raise MetapromptError(f"--name {name!r}: expected a plain folder name (letters, digits, - _ +, not "
                              "starting with a dot, no slashes), as it names a folder under --out")
    return name


def with_seed(cfg: RunConfig, seed: int) -> RunConfig:
    return cfg.with_values({"train.seed": seed})


def _record(protocol: str, name: str, cfg: RunConfig, dataset: str, options: dict | None = None, *,
            sweep: RunConfig, **extra: str) -> dict:
    """What result.json says of a run besides its outcome. ``settings``: the run's own (see :func:`run_settings`);
    ``sweep``: those of the command that asked for it, the same for all its datasets (before a dataset's variant)
    and shot counts: a report puts runs with equal ``sweep`` settings in one column."""
    sweep_settings = {k: v for k, v in run_settings(sweep, options, protocol).items() if k != "train.shots"}
    return {"protocol": protocol, "name": name, "method": cfg.method, "preset": cfg.preset, "follows": cfg.follows,
            "departures": cfg.departures, "model": cfg.model,
            "pretrained": cfg.pretrained, "dataset": dataset, "shots": cfg.train.shots, "seed": cfg.train.seed,
            "precision": cfg.train.precision,
            "settings": {**run_settings(cfg, options, protocol), **descriptor_settings(dataset)},
            "sweep": sweep_settings, **extra}


def _domains(dataset: str, root: str | Path, read: Callable[[str], DatasetSplits]) -> tuple[str, ...]:
    """The dataset's domains: the field's DG datasets' as released; another dataset's (a plugin's, a descriptor's)
    as it reads."""
    if dataset in DG_DOMAINS:
        return DG_DOMAINS[dataset]
    own = dataset in plugin_names(DATASET_GROUP) or dataset in DESCRIPTORS
    domains = tuple(read(dataset).domains) if own else ()
    if not domains:
        raise MetapromptError(f"{dataset!r} is not a domain-generalisation dataset; expected one of: "
                              f"{', '.join(DG_DOMAINS)}, or a dataset whose reader or descriptor gives domains")
    return domains


def _dataset_reader(root: str | Path) -> Callable[[str], DatasetSplits]:
    """Reads a dataset when a run first needs it. Runs come grouped by dataset, so keeping only the last
    one read avoids rereading without holding every dataset's item list at once."""
    return lru_cache(maxsize=1)(lambda dataset: build_dataset(dataset, root))


def _check_data(root: str | Path, datasets: set[str]) -> None:
    """Fail before any training when a dataset the sweep needs is unknown or has no folder under ``root``."""
    register_plugins()
    unknown = sorted(datasets - set(DATASETS))
    if unknown:
        raise MetapromptError(f"unknown dataset(s) {', '.join(unknown)}; expected some of: "
                              f"{', '.join(sorted(known_datasets()))}")
    missing = sorted(f"{name} (expected {Path(root) / describe_folders(name)})" for name in datasets
                     if name in DATASET_FOLDERS and folder_of(root, name) is None)
    if missing:
        raise MetapromptError(f"missing under the data root {root}: {'; '.join(missing)}. "
                              f"`metaprompt data check --root {root}` lists what is found")


def _trained(cfg: RunConfig, spec: TaskSpec, folder: Path, splits: DatasetSplits, runtime: Runtime) -> TrainedRun:
    """The trained run: trained now (resuming any checkpoint), or, when an earlier invocation finished
    training but stopped before writing the result, loaded from its artifact and records."""
    if is_finished(folder):
        task = run_task(spec, cfg, folder, overwrite=False, splits=splits)
        metrics = read_json(folder / METRICS_NAME)
        return TrainedRun(_load_trained(cfg, folder, task, runtime), metrics, task)
    released = released_path(runtime.released, cfg, spec) if runtime.released is not None else None
    return train_run(cfg, spec, folder, device=runtime.device, options=runtime.options, progress=runtime.progress,
                     skip_bad_images=runtime.skip_bad_images, splits=splits, store=runtime.store,
                     keep_checkpoint=runtime.keep_checkpoint, released=released)


def released_path(pattern: str, cfg: RunConfig, spec: TaskSpec, check: bool = True) -> Path:
    """The released checkpoint of the run of ``cfg`` and ``spec``: ``pattern`` filled in with the run's dataset,
    seed, shots and target domain, read as :func:`find_checkpoint` reads a path (unless not ``check``)."""
    try:
        path = pattern.format(dataset=spec.dataset, seed=cfg.train.seed, shots=cfg.train.shots,
                              target=spec.target or "")
    except (KeyError, IndexError, ValueError) as err:
        raise MetapromptError(f"--released-checkpoints {pattern!r}: expected a path with {{dataset}}, {{seed}} and "
                              f"optionally {{shots}} / {{target}} ({type(err).__name__}: {err})") from None
    return find_checkpoint(path, cfg.method) if check else Path(path)


def _load_trained(cfg: RunConfig, folder: Path, task: DatasetSplits, runtime: Runtime) -> PromptMethod:
    """The run's method built for ``task``'s classes, with the prompts of the run's artifact."""
    method = build_method_for_run(cfg, task, runtime.device, runtime.options, runtime.store)
    artifact = folder / ARTIFACT_NAME
    method.load_trained_tensors(read_artifact(artifact).tensors, source=str(artifact))
    return method


def _evaluate_on(method: PromptMethod, task: DatasetSplits, cfg: RunConfig, runtime: Runtime) -> EvalResult:
    """``method`` on ``task``'s test images over ``task``'s classes, with its templates."""
    method.dataset = task.template
    method.set_classes(task.classnames)
    return evaluate_sharded(method, task.test, cfg.train.test_batch_size, cfg.train.num_workers, runtime.progress,
                            runtime.skip_bad_images, desc=task.name, store=runtime.store)


def _base_to_new(cfg: RunConfig, spec: TaskSpec, folder: Path, splits: DatasetSplits, runtime: Runtime) -> Outcome:
    run = _trained(cfg, spec, folder, splits, runtime)
    base = run.metrics["accuracy"]
    new = _evaluate_on(run.method, build_task(replace(spec, classes="new"), splits=splits), cfg, runtime)
    if dist.is_main():
        scalars.write(folder, [("test/base_accuracy", base, cfg.train.epochs),
                               ("test/new_accuracy", new.accuracy, cfg.train.epochs),
                               ("test/hm", harmonic_mean(base, new.accuracy), cfg.train.epochs)])
    return Outcome({"base": base, "new": new.accuracy, "hm": harmonic_mean(base, new.accuracy)},
                   run.metrics.get("shortfall"), evaluation_cost(run.metrics.get("cost"), new),
                   {"base": run.metrics.get("details"), "new": class_details(new, run.method.classnames)})


def _all_classes(cfg: RunConfig, spec: TaskSpec, folder: Path, splits: DatasetSplits, runtime: Runtime) -> Outcome:
    return _test_accuracy(_trained(cfg, spec, folder, splits, runtime))


def _test_accuracy(run: TrainedRun) -> Outcome:
    """A trained run's outcome: the accuracy of its own test evaluation, its shortfall and cost."""
    return Outcome({"accuracy": run.metrics["accuracy"]}, run.metrics.get("shortfall"), run.metrics.get("cost"),
                   {"test": run.metrics.get("details")})


def _leave_one_domain_out(cfg: RunConfig, spec: TaskSpec, folder: Path, splits: DatasetSplits,
                          runtime: Runtime, source_accuracy: bool) -> Outcome:
    run = _trained(cfg, spec, folder, splits, runtime)
    outcome = _test_accuracy(run)
    if not source_accuracy:
        return outcome
    source = _evaluate_on(run.method, dg_source_test(run.task, splits), cfg, runtime)
    return Outcome({**outcome.metrics, "source": source.accuracy}, outcome.shortfall,
                   evaluation_cost(outcome.cost, source),
                   {**outcome.details, "source": class_details(source, run.method.classnames)})


class _SourceModel:
    """A cross-dataset source run: trains it, and serves its trained method to the target runs (kept from
    training, or loaded once from the artifact when training finished in an earlier invocation)."""

    def __init__(self, cfg: RunConfig, folder: Path, runtime: Runtime):
        self.cfg, self.folder, self.runtime = cfg, folder, runtime
        self.method: PromptMethod | None = None

    def train_source(self, spec: TaskSpec, splits: DatasetSplits) -> Outcome:
        run = _trained(self.cfg, spec, self.folder, splits, self.runtime)
        self.method = run.method
        return _test_accuracy(run)

    def transfer(self, task: DatasetSplits) -> Outcome:
        if self.method is None:
            if not is_finished(self.folder):
                raise MetapromptError(f"{self.folder}: the source run has no artifact to transfer")
            self.method = _load_trained(self.cfg, self.folder, task, self.runtime)
        result = _evaluate_on(self.method, task, self.cfg, self.runtime)
        return Outcome({"accuracy": result.accuracy}, cost=evaluation_cost(
            {"trainable_parameters": trainable_parameters(self.method)}, result),
            details={"test": class_details(result, self.method.classnames)})
