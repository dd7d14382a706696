"""A run's full configuration: method, model, method options and training options; presets shipped as
YAML inside the package; ``--set key=value`` overrides with type checks."""
from __future__ import annotations

import contextlib
import dataclasses
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


@dataclass
class RunConfig:
    method: str
    model: str = "ViT-B-16"
    pretrained: str | None = "openai"
    method_config: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["method_config"] = dataclasses.asdict(make_config(self.method, self.method_config))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["train"] = TrainConfig(**d.get("train", {}))
        return cls(**d)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("metaprompt.presets").iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict:
    """A preset by name (``metaprompt_b2n``) or a path to a YAML file of the same form."""
    path = Path(name)
    if name.endswith((".yaml", ".yml")) and path.is_file():
        text = path.read_text()
    else:
        resource = resources.files("metaprompt.presets") / f"{name}.yaml"
        if not resource.is_file():
            raise MetapromptError(f"unknown preset {name!r}; expected one of: {', '.join(preset_names())} "
                                  "or a path to a .yaml file")
        text = resource.read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or "method" not in data:
        raise MetapromptError(f"preset {name}: expected a mapping with at least a 'method' key")
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
    cfg = RunConfig(method=data["method"], model=data.get("model", "ViT-B-16"),
                    pretrained=data.get("pretrained", "openai"), method_config=dict(data.get("method_config", {})),
                    train=TrainConfig(**data.get("train", {})), preset=preset)
    make_config(cfg.method, cfg.method_config)  # validates the preset's keys
    for assignment in sets or []:
        apply_set(cfg, assignment)
    if model is not None:
        cfg.model = model
    if pretrained is not None:
        cfg.pretrained = pretrained if pretrained.lower() != "none" else None
    return cfg


def apply_set(cfg: RunConfig, assignment: str) -> None:
    """Apply ``key=value``; ``key`` is a training or method option (``train.`` / ``method.`` prefixes
    disambiguate), or ``model`` / ``pretrained``. The value is parsed as YAML and type-checked."""
    if "=" not in assignment:
        raise MetapromptError(f"--set {assignment!r}: expected key=value")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    if key in TOP_LEVEL:
        setattr(cfg, key, raw if raw.lower() != "none" else None)
        return
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
    if owners[0] == "train":
        setattr(cfg.train, name, value)
    else:
        cfg.method_config[name] = value


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
