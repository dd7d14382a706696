"""A run's full configuration: method, model, the method's typed config and the training options; presets
shipped as YAML inside the package; ``--set key=value`` overrides with type checks.

Every value is checked where its config is built (the dataclasses' ``__post_init__``, see
:mod:`metaprompt.validation`): a bad one fails there, naming the option and what it expects.

A published preset names the released config file it follows (``follows``), and may hold *variants*: the
other released config files that the reference scripts pick for some datasets or shot counts (CoOp trains
50 epochs on ImageNet and at 1 shot, 100 at 2 and 4 shots). :meth:`RunConfig.for_task` picks the variant
for a run's dataset and shots. A value the user sets is never replaced by a variant; one that differs from
the published value is a *departure*, recorded in the run's config and reported in one line.

No torch here: the method registry (:mod:`metaprompt.methods`) is imported when a method's config is first
needed, so that building the command line and reading configs stay fast.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .errors import MetapromptError
from .precision import PRECISIONS
from .world import WORLD_MODEL
from .validation import allowed_types, at_least, fraction, in_range, one_of, positive, validate

DEFAULT_PRESETS = {
    "zeroshot": "zeroshot",
    "linear_probe": "linear_probe",
    "coop": "coop_b2n",
    "cocoop": "cocoop_b2n",
    "kgcoop": "kgcoop_b2n",
    "promptsrc": "promptsrc_b2n",
    "vpt": "vpt",
    "ivlp": "ivlp_b2n",
    "maple": "maple_b2n",
    "metaprompt": "metaprompt_b2n",
}
PROTOCOL_PRESETS = {"dg": {"metaprompt": "metaprompt_dg"}, "xd": {"maple": "maple_xd", "promptsrc": "promptsrc_xd", "kgcoop": "kgcoop_xd"},
                    "fewshot": {"coop": "coop_fewshot", "promptsrc": "promptsrc_fewshot"}}
"""Methods with a preset of their own for a protocol (MetaPrompt's domain-generalisation config, MaPLe's released
cross-dataset config); the others start from their default preset."""
TOP_LEVEL = ("model", "pretrained")
EXECUTION_KEYS = frozenset({"train.num_workers", "train.test_batch_size", "train.seed", "train.checkpoint_freq",
                            "train.keep_checkpoints"})
"""Settings that do not depart from a published configuration: how a run executes (workers, the test batch,
which changes no number) and the seed. Shots depart unless the preset publishes them (its ``shots`` list)."""



WORLD_PRESET_SUFFIX = {"dg": "dg"}
"""The world preset a protocol starts from: ``world_<method>_dg`` for domain generalisation, else ``_b2n``."""


OPTIMIZERS = ("sgd", "adam", "adamw")
FINAL_MODELS = ("last", "best_val")
LR_SCHEDULERS = ("cosine", "single_step", "multi_step", "constant")
RELEASED_TRAINING = ("train.optimizer", "train.lr_scheduler", "train.momentum", "train.weight_decay", "train.stepsize",
                     "train.gamma", "train.final_model")
"""What every released config sets the same way (SGD, momentum 0.9, weight decay 5e-4, cosine), so that a preset
that follows one publishes them whether or not its file names them: changing one is a departure."""


def protocol_preset(protocol: str, method: str | None) -> str | None:
    """The preset a ``protocol`` (``dg``, ``xd``) run of ``method`` starts from (None: the method's default)."""
    return PROTOCOL_PRESETS.get(protocol, {}).get(method or "")


def default_preset(method: str, protocol: str = "base2new", model: str | None = None) -> str | None:
    """The preset a ``protocol`` run of ``method`` starts from when none is named: on the offline world's model
    its world preset (``world_<method>_dg`` for DG when there is one, else ``world_<method>_b2n``), else the
    protocol's published preset, else the method's default; None for a plugin's method, which has none."""
    if model == WORLD_MODEL:
        names = preset_names()
        for name in (f"world_{method}_{WORLD_PRESET_SUFFIX.get(protocol, 'b2n')}", f"world_{method}_b2n",
                     f"world_{method}"):
            if name in names:
                return name
    return protocol_preset(protocol, method) or DEFAULT_PRESETS.get(method)


@dataclass
class TrainConfig:
    """Optimisation and data settings (defaults: MetaPrompt's base-to-new configuration)."""

    epochs: int = 8
    batch_size: int = 16
    """Global batch: split evenly over processes when distributed."""
    test_batch_size: int = 100
    lr: float = 0.0015
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    """Constant LR during the warm-up epochs (the field's ConstantWarmupScheduler)."""
    shots: int = 16
    """Training images per class (per class per source domain in domain generalisation); 0 = all."""
    seed: int = 1
    precision: str = "auto"
    """auto (bf16 on a GPU, fp32 elsewhere), fp32 (exact), bf16 (mixed: weights stay fp32, matrix products run
    in bf16), or fp16-pure (weights and prompts in fp16, as the released codebases' default; CUDA only, fp32
    elsewhere); fp16 (mixed) evaluates but does not train. See :mod:`metaprompt.precision`."""
    num_workers: int | None = None
    """Data-loading worker processes (None: 2 on the CPU; on a GPU, the node's cores shared by its processes,
    at most 8)."""
    augment_views: int = 0
    """Distinct augmented views per training image (0: a new view every epoch)."""
    crop_scale_min: float = 0.08
    """Smallest random-resized-crop area (fraction of the image); the field uses 0.08."""
    max_steps: int = 0
    """Stop after this many training steps (0: no limit); for smoke tests."""
    optimizer: str = "sgd"
    """sgd (with ``momentum`` and ``weight_decay``: every released config's), adam or adamw (betas 0.9, 0.999 and
    ``weight_decay``, as Dassl's OPTIM.NAME builds them)."""
    lr_scheduler: str = "cosine"
    """After the warm-up epochs, counted from them (Dassl's WARMUP_RECOUNT): cosine (every released config's),
    single_step (x ``gamma`` every ``stepsize[0]`` epochs), multi_step (x ``gamma`` at each epoch in ``stepsize``)
    or constant."""
    stepsize: list[int] = field(default_factory=list)
    """single_step: one step length in epochs; multi_step: the epochs at which the LR drops (Dassl's STEPSIZE)."""
    gamma: float = 0.1
    """The LR's factor at each step (single_step, multi_step)."""
    final_model: str = "last"
    """The prompts a run keeps and tests: the last epoch's (every released config's) or best_val, the epoch with
    the best validation accuracy (evaluated after every epoch), as Dassl's TEST.FINAL_MODEL."""
    checkpoint_freq: int = 0
    """Keep the prompts of every N-th epoch as an artifact of their own, RUN/epochs/prompts-epochE.safetensors
    (0: none), as Dassl's CHECKPOINT_FREQ."""
    keep_checkpoints: int = 0
    """How many of those epoch artifacts to keep, the latest (0: all)."""

    def __post_init__(self) -> None:
        validate(self, {
            "epochs": at_least(0), "batch_size": at_least(1), "test_batch_size": at_least(1), "lr": positive,
            "momentum": in_range(0, 1), "weight_decay": at_least(0), "warmup_epochs": at_least(0),
            "warmup_lr": positive, "shots": at_least(0), "seed": in_range(0, 2**32), "precision": one_of(PRECISIONS),
            "num_workers": at_least(0), "augment_views": at_least(0), "crop_scale_min": fraction,
            "max_steps": at_least(0), "optimizer": one_of(OPTIMIZERS), "lr_scheduler": one_of(LR_SCHEDULERS),
            "gamma": positive, "final_model": one_of(FINAL_MODELS), "checkpoint_freq": at_least(0),
            "keep_checkpoints": at_least(0)}, scope="train.")
        steps = self.stepsize
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in steps):
            raise MetapromptError(f"train.stepsize must be a list of epoch counts >= 1, got {steps!r}")
        if self.lr_scheduler == "single_step" and len(steps) != 1:
            raise MetapromptError(f"train.lr_scheduler single_step needs one step length, e.g. --set stepsize=[10]; "
                                  f"got stepsize {steps!r}")
        if self.lr_scheduler == "multi_step" and (not steps or sorted(set(steps)) != list(steps)):
            raise MetapromptError(f"train.lr_scheduler multi_step needs increasing epochs at which the LR drops, "
                                  f"e.g. --set stepsize=[10,20]; got stepsize {steps!r}")


@dataclass(frozen=True)
class Variant:
    """A released config file that replaces the preset's own for some datasets or shot counts."""

    follows: str
    datasets: tuple[str, ...] = ()
    """The datasets it is for (any when empty)."""
    shots: tuple[int, ...] = ()
    """The shot counts it is for (any when empty)."""
    values: dict[str, Any] = field(default_factory=dict)
    """Scoped keys (``train.epochs``) and their values."""

    def matches(self, dataset: str, shots: int) -> bool:
        return (not self.datasets or dataset in self.datasets) and (not self.shots or shots in self.shots)


@dataclass
class RunConfig:
    """Everything a run is: method, model, the method's config (its typed dataclass; a mapping of options is
    turned into it), the training options, and the published config it follows."""

    method: str
    model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    method_config: Any = None
    """The method's config dataclass (``CoOpConfig`` ...); None or a mapping of options builds it."""
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""
    follows: str | None = None
    """The released config file the run follows (``owner/repo path``); None for this project's own presets."""
    departures: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Published values the run changes: ``{key: {"published": value, "used": value}}``."""
    published: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    user_keys: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    variants: tuple[Variant, ...] = field(default=(), repr=False, compare=False)
    published_shots: tuple[int, ...] = field(default=(), repr=False, compare=False)
    """The shot counts the released scripts run this config with (a preset's ``shots``; empty: its train.shots)."""
    notes: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """What resolving the user's options changed besides them (see :func:`with_reconciled`), said when a run starts."""

    def __post_init__(self) -> None:
        validate(self, scope="")
        if self.method_config is None or isinstance(self.method_config, dict):
            self.method_config = make_config(self.method, self.method_config)
        elif not isinstance(self.method_config, method_config_class(self.method)):
            raise MetapromptError(f"method_config for {self.method!r}: expected "
                                  f"{method_config_class(self.method).__name__}, got "
                                  f"{type(self.method_config).__name__}")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        d["train"] = dataclasses.asdict(self.train)
        d["method_config"] = dataclasses.asdict(self.method_config)
        d["departures"] = dict(self.departures)
        return d

    def value(self, key: str) -> Any:
        """The value of a scoped key: ``model``, ``pretrained``, ``train.<name>`` or ``method.<name>``."""
        if key in TOP_LEVEL:
            return getattr(self, key)
        scope, name = key.split(".", 1)
        return getattr(self.train if scope == "train" else self.method_config, name)

    def with_values(self, values: dict[str, Any], user: bool = True) -> "RunConfig":
        """This config with scoped keys (``train.shots``, ``method.n_ctx``, ``model``) set to ``values``, each
        checked where its config is rebuilt; ``user``: remembered as set by the user, so that no variant
        replaces them."""
        train = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("train.")}
        method = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("method.")}
        top = {k: v for k, v in values.items() if k in TOP_LEVEL}
        for names, config, scope in ((train, self.train, "training"), (method, self.method_config, self.method)):
            unknown = sorted(set(names) - {f.name for f in dataclasses.fields(config)})
            if unknown:
                raise MetapromptError(f"no {scope} option {', '.join(unknown)}")
        unscoped = sorted(k for k in values if k not in TOP_LEVEL and not k.startswith(("train.", "method.")))
        if unscoped:
            raise MetapromptError(f"keys {', '.join(unscoped)}: expected train.NAME, method.NAME, model or pretrained")
        return dataclasses.replace(
            self, **top, train=dataclasses.replace(self.train, **train),
            method_config=dataclasses.replace(self.method_config, **method),
            user_keys=self.user_keys | set(values) if user else self.user_keys)

    def for_task(self, dataset: str) -> "RunConfig":
        """This config for a run on ``dataset`` at its ``train.shots``: the preset's variant for them (values the
        user set are kept), with its departures from the published values."""
        cfg = dataclasses.replace(self, published=dict(self.published))
        for variant in self.variants:
            if variant.matches(dataset, cfg.train.shots):
                cfg = cfg.with_values({k: v for k, v in variant.values.items() if k not in self.user_keys},
                                      user=False)
                cfg.follows = variant.follows
                cfg.published.update(variant.values)
                break
        cfg.departures = {key: {"published": published, "used": cfg.value(key)}
                          for key, published in cfg.published.items() if cfg.departs(key, published)}
        return cfg

    def departs(self, key: str, published: Any) -> bool:
        """Whether the value of ``key`` departs from the ``published`` one: never for what changes no number,
        nor for an option the method does not read; shots the preset publishes (its ``shots`` list) do not."""
        from .methods import method_class

        if key in EXECUTION_KEYS or key in method_class(self.method).unused_train_options:
            return False
        if key == "train.shots" and self.published_shots:
            return self.train.shots not in self.published_shots
        return self.value(key) != published

    def departure_line(self) -> str:
        """One line naming every departure from the published config ('' when there is none)."""
        if not self.departures or not self.follows:
            return ""
        changes = ", ".join(f"{k.split('.')[-1]}={v['used']!r} (published {v['published']!r})"
                            for k, v in self.departures.items())
        return f"this run departs from the published config it follows ({self.follows}, preset {self.preset}): {changes}"


def method_config_class(method: str) -> type:
    """The config dataclass of ``method`` (an unknown name is an error listing the known ones)."""
    from .methods import method_class

    return method_class(method).config_class


def make_config(method: str, values: dict[str, Any] | None = None) -> Any:
    """The method's config dataclass with ``values`` applied (see :func:`metaprompt.methods.make_config`)."""
    from .methods import make_config as make

    return make(method, values)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("metaprompt.presets").iterdir() if p.name.endswith(".yaml"))


PRESET_KEYS = {"method": str, "model": str, "pretrained": (str, type(None)), "follows": str, "method_config": dict,
               "train": dict, "variants": list, "shots": list, "base": str}
BASE_DEPTH = 8
"""How many presets deep ``base:`` may chain (a longer chain is a cycle)."""


def load_preset(name: str) -> dict:
    """A preset by name (``metaprompt_b2n``) or a path to a YAML file of the same form."""
    path = Path(name)
    if name.endswith((".yaml", ".yml")) and path.is_file():
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise MetapromptError(f"{source}: unreadable preset ({err})") from None
    elif name.endswith((".yaml", ".yml")) or "/" in name:
        raise MetapromptError(f"preset file {name} not found (expected a YAML file, or a shipped preset's name)")
    else:
        resource = resources.files("metaprompt.presets") / f"{name}.yaml"
        if not resource.is_file():
            raise MetapromptError(f"unknown preset {name!r}; expected one of: {', '.join(preset_names())} "
                                  "or a path to a .yaml file")
        source, text = f"preset {name}", resource.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise MetapromptError(f"{source}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict) or not ("method" in data or "base" in data):
        raise MetapromptError(f"{source}: expected a mapping with at least a 'method' key (or a 'base' preset)")
    for key, value in data.items():
        if key not in PRESET_KEYS:
            raise MetapromptError(f"{source}: unknown key {key!r}; a preset takes {', '.join(PRESET_KEYS)}")
        if not isinstance(value, PRESET_KEYS[key]):
            raise MetapromptError(f"{source}: {key} must be a {_kind(PRESET_KEYS[key])}, got {value!r}")
    return data


def _kind(types: type | tuple) -> str:
    names = {str: "string", dict: "mapping", list: "list", type(None): "none"}
    return " or ".join(names[t] for t in (types if isinstance(types, tuple) else (types,)))


def resolve(method: str | None = None, preset: str | None = None, sets: list[str] | None = None,
            model: str | None = None, pretrained: str | None = None, protocol: str = "base2new") -> RunConfig:
    """Preset (unless named, the one :func:`default_preset` picks for the method, protocol and model) <
    ``--set`` overrides < explicit model flags. ``model`` world-tiny means its shipped weights unless
    ``pretrained`` names others."""
    if method is None and preset is None:
        raise MetapromptError("give --method or --preset")
    if method is not None:
        method_config_class(method)
    preset = preset or default_preset(method, protocol, model)
    if model == WORLD_MODEL and pretrained is None:
        pretrained = "none"
    if preset is None:  # a plugin's method: its config's defaults and the training defaults
        cfg = RunConfig(method=method)
    else:
        data = load_preset(preset)
        if method is not None and data["method"] != method:
            raise MetapromptError(f"preset {preset!r} is for method {data['method']!r}, not {method!r}")
        cfg = _from_preset(preset, data)
    values = dict(parse_set(cfg, assignment) for assignment in sets or [])
    values.update({key: value if key == "model" or value.lower() != "none" else None
                   for key, value in (("model", model), ("pretrained", pretrained)) if value is not None})
    return with_reconciled(cfg, values)


def with_reconciled(cfg: RunConfig, values: dict[str, Any]) -> RunConfig:
    """``cfg`` with the user's ``values`` set together (so that options which depend on each other are checked
    as a whole), after the method's config reconciles an option given alone with the one it depends on (CoOp's
    n_ctx and ctx_init): what that changes is said in one line, and recorded, since it is what the run uses."""
    reconcile = getattr(type(cfg.method_config), "reconcile", None)
    if reconcile is not None:
        given = {key.split(".", 1)[1] for key in values if key.startswith("method.")}
        fields = {**dataclasses.asdict(cfg.method_config), **{k.split(".", 1)[1]: v for k, v in values.items()
                                                               if k.startswith("method.")}}
        changes, note = reconcile(fields, given)
        values = {**values, **{f"method.{key}": value for key, value in changes.items()}}
        if note:
            cfg = dataclasses.replace(cfg, notes=(*cfg.notes, f"{cfg.method}: {note}"))
    try:
        return cfg.with_values(values) if values else cfg
    except MetapromptError as err:
        named = [key for key in values if key not in TOP_LEVEL and key in str(err)] or \
                [key for key in values if key not in TOP_LEVEL]
        given = " ".join(f"--set {key.split('.')[-1]}={_text(values[key])}" for key in named)
        raise MetapromptError(f"{given}: {err}" if given else str(err)) from None


def _text(value: Any) -> str:
    return "none" if value is None else str(value)


def _from_preset(preset: str, data: dict, depth: int = 0) -> RunConfig:
    """The preset's config, with the values it publishes when it follows a released file."""
    if "base" in data:
        return _on_base(preset, data, depth)
    try:
        train = TrainConfig(**data.get("train", {}))
        cfg = RunConfig(method=data["method"], model=data.get("model", "ViT-B-16"),
                        pretrained=data.get("pretrained", "openai"), method_config=dict(data.get("method_config", {})),
                        train=train, preset=preset, follows=data.get("follows"),
                        variants=tuple(_variant(preset, v) for v in data.get("variants", [])),
                        published_shots=_shot_list(preset, data.get("shots", [])))
        for variant in cfg.variants:  # each variant's values are checked as the run that picks it checks them
            cfg.with_values(variant.values, user=False)
    except TypeError as err:
        raise MetapromptError(f"preset {preset}: {err}") from None
    except MetapromptError as err:
        raise MetapromptError(f"preset {preset}: {err}") from None
    if cfg.follows and _is_file(preset):
        return _published_by_shipped(cfg)
    if cfg.follows:
        cfg.published = {key: cfg.value(key) for key in (*_preset_keys(data), *RELEASED_TRAINING)}
    return cfg


def _on_base(preset: str, data: dict, depth: int) -> RunConfig:
    """A preset that starts from another (``base: coop_b2n``) and sets some keys: the base's config with those keys
    set as the user sets them, so that the base's variants never replace them and each is a departure from what
    the base publishes."""
    if depth >= BASE_DEPTH:
        raise MetapromptError(f"preset {preset}: its chain of 'base' presets is more than {BASE_DEPTH} deep (a cycle?)")
    extra = sorted(set(data) - {"base", "method", "model", "pretrained", "method_config", "train"})
    if extra:
        raise MetapromptError(f"preset {preset}: a preset with 'base' sets method_config, train, model and pretrained "
                              f"only; found {', '.join(extra)}")
    base = _from_preset(data["base"], load_preset(data["base"]), depth + 1)
    if data.get("method", base.method) != base.method:
        raise MetapromptError(f"preset {preset}: its base {data['base']} is a {base.method} preset, not "
                              f"{data['method']}")
    values = {key: data[key] for key in TOP_LEVEL if key in data}
    values.update({f"method.{k}": v for k, v in data.get("method_config", {}).items()})
    values.update({f"train.{k}": v for k, v in data.get("train", {}).items()})
    try:
        return dataclasses.replace(with_reconciled(base, values), preset=preset)
    except MetapromptError as err:
        raise MetapromptError(f"preset {preset}: {err}") from None


def _is_file(preset: str) -> bool:
    return preset.endswith((".yaml", ".yml")) and Path(preset).is_file()


def _published_by_shipped(cfg: RunConfig) -> RunConfig:
    """A user's preset file that names a released file in ``follows``: the published values are those of the
    shipped preset (or variant) that follows the same file, so that every value the user's file changes is a
    departure; a file no shipped preset follows cannot be checked, and the run says so."""
    for name in preset_names():
        shipped = _from_preset(name, load_preset(name))
        if shipped.method != cfg.method:
            continue
        if shipped.follows == cfg.follows:
            return dataclasses.replace(cfg, published=dict(shipped.published), variants=shipped.variants,
                                       published_shots=cfg.published_shots or shipped.published_shots)
        for variant in shipped.variants:
            if variant.follows == cfg.follows:
                return dataclasses.replace(cfg, published={**shipped.published, **variant.values},
                                           published_shots=cfg.published_shots or shipped.published_shots)
    return dataclasses.replace(cfg, notes=(*cfg.notes, f"{cfg.preset} follows {cfg.follows}, which no shipped "
                                           f"{cfg.method} preset follows: its values are not checked against it"))


def _shot_list(preset: str, shots: list) -> tuple[int, ...]:
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in shots):
        raise MetapromptError(f"preset {preset}: shots must be a list of shot counts (integers >= 0), got {shots!r}")
    return tuple(shots)


def warn_departures(cfg: RunConfig) -> None:
    """The notes of resolving the user's options and the departures from the published config, a line each."""
    for note in cfg.notes:
        sys.stderr.write(f"metaprompt: note: {note}\n")
    line = cfg.departure_line()
    if line:
        sys.stderr.write(f"metaprompt: warning: {line}\n")


def _preset_keys(data: dict) -> list[str]:
    """The scoped keys a preset file sets."""
    keys = [k for k in TOP_LEVEL if k in data]
    keys += [f"method.{k}" for k in data.get("method_config", {})]
    keys += [f"train.{k}" for k in data.get("train", {})]
    return keys


def _variant(preset: str, data: Any) -> Variant:
    unknown = sorted(set(data) - {"follows", "datasets", "shots", "method_config", "train"}) if isinstance(data, dict) else None
    if unknown is None or unknown or "follows" not in data:
        raise MetapromptError(f"preset {preset}: a variant is a mapping with 'follows' that takes datasets, shots, "
                              f"method_config and train; found {data!r}")
    values = {f"method.{k}": v for k, v in data.get("method_config", {}).items()}
    values.update({f"train.{k}": v for k, v in data.get("train", {}).items()})
    return Variant(follows=data["follows"], datasets=tuple(data.get("datasets", ())),
                   shots=tuple(data.get("shots", ())), values=values)


def option_key(cfg: RunConfig, key: str) -> str:
    """The scoped key (``train.lr``, ``method.n_ctx``, ``model``) that ``key`` names for ``cfg``'s method;
    ``train.`` / ``method.`` prefixes disambiguate a name both have."""
    if key in TOP_LEVEL:
        return key
    fields = {"train": [f.name for f in dataclasses.fields(TrainConfig)],
              "method": [f.name for f in dataclasses.fields(cfg.method_config)]}
    scope, _, name = key.rpartition(".")
    if scope and scope not in fields:
        raise MetapromptError(f"--set {key}: unknown scope {scope!r}; expected train. or method.")
    owners = [s for s in ([scope] if scope else fields) if name in fields[s]]
    if not owners:
        raise MetapromptError(
            f"--set {key}: no such option. Training options: {', '.join(fields['train'])}; "
            f"{cfg.method} options: {', '.join(fields['method'])}; also model, pretrained")
    if len(owners) > 1:
        raise MetapromptError(f"--set {key}: ambiguous, say train.{name} or method.{name}")
    return f"{owners[0]}.{name}"


def parse_set(cfg: RunConfig, assignment: str) -> tuple[str, Any]:
    """The scoped key and the value of ``key=value`` (see :func:`option_key`); the value is parsed as YAML for
    the field's type, and checked where the config is rebuilt."""
    if "=" not in assignment:
        raise MetapromptError(f"--set {assignment!r}: expected key=value")
    key, raw = (part.strip() for part in assignment.split("=", 1))
    scoped = option_key(cfg, key)
    return scoped, parse_value(raw, _field_type(cfg, scoped))


def apply_set(cfg: RunConfig, assignment: str) -> RunConfig:
    """``cfg`` with ``key=value`` applied (see :func:`parse_set` and :func:`with_reconciled`)."""
    return with_reconciled(cfg, dict([parse_set(cfg, assignment)]))


def _field_type(cfg: RunConfig, scoped: str) -> Any:
    if scoped in TOP_LEVEL:
        return typing.get_type_hints(RunConfig)[scoped]
    scope, name = scoped.split(".", 1)
    return typing.get_type_hints(TrainConfig if scope == "train" else type(cfg.method_config))[name]


def parse_value(raw: str, annotation: Any) -> Any:
    """``raw`` parsed as YAML, read as the field's type wants it: ``none`` / ``null`` is None (the empty text for
    a string field that takes no None: ``ctx_init=none`` is no words), a string field keeps any other text as
    typed, and a float field takes ``1e-5`` (which YAML 1.1 reads as a string)."""
    allowed = allowed_types(annotation)
    if raw.lower() in ("none", "null", "~"):
        if type(None) in allowed:
            return None
        if str in allowed:
            return ""
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if str in allowed:
        return value if isinstance(value, str) else raw
    if float in allowed and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return value
