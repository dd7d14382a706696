"""A run's full configuration: method, model, method options and training options; presets shipped as
YAML inside the package; ``--set key=value`` overrides with type checks.

A published preset names the released config file it follows (``follows``), and may hold *variants*: the
other released config files that the reference scripts pick for some datasets or shot counts (CoOp trains
50 epochs on ImageNet and at 1 shot, 100 at 2 and 4 shots). :meth:`RunConfig.for_task` picks the variant
for a run's dataset and shots. A value the user sets is never replaced by a variant; one that differs from
the published value is a *departure*, recorded in the run's config and reported in one line.
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

from .engine import TrainConfig
from .errors import MetapromptError
from .methods import make_config, method_class

DEFAULT_PRESETS = {
    "zeroshot": "zeroshot",
    "coop": "coop_b2n",
    "cocoop": "cocoop_b2n",
    "vpt": "vpt",
    "ivlp": "ivlp_b2n",
    "maple": "maple_b2n",
    "metaprompt": "metaprompt_b2n",
}
TOP_LEVEL = ("model", "pretrained")
EXECUTION_KEYS = frozenset({"train.num_workers", "train.test_batch_size", "train.seed", "train.shots"})
"""Settings that do not depart from a published configuration: how a run executes (workers, the test batch,
which changes no number) and what the protocol asks of it (seed, shots)."""


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
    method: str
    model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    method_config: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""
    follows: str | None = None
    """The released config file the run follows (``owner/repo path``); None for this project's own presets."""
    departures: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Published values the run changes: ``{key: {"published": value, "used": value}}``."""
    published: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    user_keys: frozenset[str] = field(default_factory=frozenset, repr=False, compare=False)
    variants: tuple[Variant, ...] = field(default=(), repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        d["train"] = dataclasses.asdict(self.train)
        d["method_config"] = dataclasses.asdict(make_config(self.method, self.method_config))
        d["departures"] = dict(self.departures)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["train"] = TrainConfig(**d.get("train", {}))
        return cls(**d)

    def value(self, key: str) -> Any:
        """The value of a scoped key: ``model``, ``pretrained``, ``train.<name>`` or ``method.<name>``."""
        if key in TOP_LEVEL:
            return getattr(self, key)
        scope, name = key.split(".", 1)
        if scope == "train":
            return getattr(self.train, name)
        return self.method_config.get(name, getattr(method_class(self.method).config_class(), name))

    def for_task(self, dataset: str) -> "RunConfig":
        """This config for a run on ``dataset`` at its ``train.shots``: the preset's variant for them (values the
        user set are kept), with its departures from the published values."""
        cfg = dataclasses.replace(self, method_config=dict(self.method_config), train=dataclasses.replace(self.train),
                                  published=dict(self.published))
        for variant in self.variants:
            if variant.matches(dataset, cfg.train.shots):
                cfg.follows = variant.follows
                cfg.published.update(variant.values)
                for key, value in variant.values.items():
                    if key not in self.user_keys:
                        _assign(cfg, key, value)
                break
        cfg.departures = {key: {"published": published, "used": cfg.value(key)}
                          for key, published in cfg.published.items()
                          if key not in EXECUTION_KEYS and cfg.value(key) != published}
        return cfg

    def departure_line(self) -> str:
        """One line naming every departure from the published config ('' when there is none)."""
        if not self.departures or not self.follows:
            return ""
        changes = ", ".join(f"{k.split('.')[-1]}={v['used']!r} (published {v['published']!r})"
                            for k, v in self.departures.items())
        return f"this run departs from the published config it follows ({self.follows}, preset {self.preset}): {changes}"


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("metaprompt.presets").iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    """A preset by name (``metaprompt_b2n``) or a path to a YAML file of the same form."""
    path = Path(name)
    if name.endswith((".yaml", ".yml")) and path.is_file():
        source, text = str(path), path.read_text()
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
    if not isinstance(data, dict) or "method" not in data:
        raise MetapromptError(f"{source}: expected a mapping with at least a 'method' key")
    return data


def resolve(method: str | None = None, preset: str | None = None, sets: list[str] | None = None,
            model: str | None = None, pretrained: str | None = None) -> RunConfig:
    """Preset (the method's default one unless named) < ``--set`` overrides < explicit model flags."""
    if method is None and preset is None:
        raise MetapromptError("give --method or --preset")
    if method is not None:
        method_class(method)
    preset = preset or DEFAULT_PRESETS[method]
    data = load_preset(preset)
    if method is not None and data["method"] != method:
        raise MetapromptError(f"preset {preset!r} is for method {data['method']!r}, not {method!r}")
    try:
        train = TrainConfig(**data.get("train", {}))
    except TypeError as err:
        raise MetapromptError(f"preset {preset}: {err}") from None
    cfg = RunConfig(method=data["method"], model=data.get("model", "ViT-B-16"),
                    pretrained=data.get("pretrained", "openai"), method_config=dict(data.get("method_config", {})),
                    train=train, preset=preset, follows=data.get("follows"),
                    variants=tuple(_variant(preset, v) for v in data.get("variants", [])))
    make_config(cfg.method, cfg.method_config)  # validates the preset's keys
    if cfg.follows:
        cfg.published = {key: cfg.value(key) for key in _preset_keys(data)}
    user_keys = set()
    for assignment in sets or []:
        user_keys.add(apply_set(cfg, assignment))
    for key, value in (("model", model), ("pretrained", pretrained)):
        if value is not None:
            setattr(cfg, key, value if key == "model" or value.lower() != "none" else None)
            user_keys.add(key)
    cfg.user_keys = frozenset(user_keys)
    return cfg


def warn_departures(cfg: RunConfig) -> None:
    line = cfg.departure_line()
    if line:
        print(f"metaprompt: warning: {line}", file=sys.stderr)


def _preset_keys(data: dict) -> list[str]:
    """The scoped keys a preset file sets."""
    keys = [k for k in TOP_LEVEL if k in data]
    keys += [f"method.{k}" for k in data.get("method_config", {})]
    keys += [f"train.{k}" for k in data.get("train", {})]
    return keys


def _variant(preset: str, data: dict) -> Variant:
    unknown = sorted(set(data) - {"follows", "datasets", "shots", "method_config", "train"})
    if unknown or "follows" not in data:
        raise MetapromptError(f"preset {preset}: a variant needs 'follows' and takes datasets, shots, "
                              f"method_config and train; found {sorted(data)}")
    values = {f"method.{k}": v for k, v in data.get("method_config", {}).items()}
    values.update({f"train.{k}": v for k, v in data.get("train", {}).items()})
    return Variant(follows=data["follows"], datasets=tuple(data.get("datasets", ())),
                   shots=tuple(data.get("shots", ())), values=values)


def _assign(cfg: RunConfig, key: str, value: Any) -> None:
    scope, name = key.split(".", 1)
    if scope == "train":
        setattr(cfg.train, name, value)
    else:
        cfg.method_config[name] = value


def apply_set(cfg: RunConfig, assignment: str) -> str:
    """Apply ``key=value``; ``key`` is a training or method option (``train.`` / ``method.`` prefixes
    disambiguate), or ``model`` / ``pretrained``. The value is parsed as YAML and type-checked. Returns the
    scoped key it set."""
    if "=" not in assignment:
        raise MetapromptError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if key in TOP_LEVEL:
        setattr(cfg, key, raw if raw.lower() != "none" else None)
        return key
    method_fields = {f.name: f for f in dataclasses.fields(method_class(cfg.method).config_class)}
    train_fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    scope, _, name = key.rpartition(".")
    candidates = {"train": train_fields, "method": method_fields}
    if scope:
        if scope not in candidates:
            raise MetapromptError(f"--set {key}: unknown scope {scope!r}; expected train. or method.")
        owners = [scope] if name in candidates[scope] else []
    else:
        owners = [s for s, fields in candidates.items() if name in fields]
    if not owners:
        raise MetapromptError(
            f"--set {key}: no such option. Training options: {', '.join(train_fields)}; "
            f"{cfg.method} options: {', '.join(method_fields)}; also model, pretrained")
    if len(owners) > 1:
        raise MetapromptError(f"--set {key}: ambiguous, say train.{name} or method.{name}")
    fld = candidates[owners[0]][name]
    value = coerce(key, raw, fld.type, owners[0] == "train" and TrainConfig or method_class(cfg.method).config_class)
    _assign(cfg, f"{owners[0]}.{name}", value)
    return f"{owners[0]}.{name}"


def coerce(key: str, raw: str, annotation: Any, owner: type) -> Any:
    """Parse ``raw`` as YAML and check it against the field's type."""
    hints = typing.get_type_hints(owner)
    expected = hints.get(key.rpartition(".")[2], annotation)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    allowed = typing.get_args(expected) or (expected,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if float in allowed and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)  # YAML 1.1 reads 1e-5 (no dot) as a string
    if str in allowed and not isinstance(value, str):
        return raw
    for kind in allowed:
        if kind is not type(None) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise MetapromptError(f"--set {key}={raw}: expected a value of type {names}")
