"""The method zoo behind one registry: each method is a typed config (dataclass) plus one module."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..clip import PromptCLIP
from ..errors import MetapromptError
from ..plugins import METHOD_GROUP, load, plugin_entry, plugin_names
from .base import Batch, ComputeOptions, PromptMethod
from .cocoop import CoCoOp, CoCoOpConfig
from .coop import CoOp, CoOpConfig
from .ivlp import IVLP, IVLPConfig
from .kgcoop import KgCoOp, KgCoOpConfig
from .linear_probe import LinearProbe, LinearProbeConfig
from .maple import MaPLe, MaPLeConfig
from .metaprompt import MetaPrompt, MetaPromptConfig
from .promptsrc import PromptSRC, PromptSRCConfig
from .vpt import VPT, VPTConfig
from .zeroshot import ZeroShotCLIP, ZeroShotConfig

METHODS: dict[str, type[PromptMethod]] = {
    m.name: m for m in (ZeroShotCLIP, LinearProbe, CoOp, CoCoOp, KgCoOp, VPT, IVLP, MaPLe, PromptSRC, MetaPrompt)
}


def method_class(name: str) -> type[PromptMethod]:
    """The method registered as ``name``: one of this package's, or a plugin's (see :mod:`metaprompt.plugins`)."""
    if name not in METHODS:
        entry = plugin_entry(METHOD_GROUP, name)
        if entry is None:
            known = [*METHODS, *(n for n in plugin_names(METHOD_GROUP) if n not in METHODS)]
            raise MetapromptError(f"unknown method {name!r}; expected one of: {', '.join(known)}")
        METHODS[name] = _checked_plugin(load(entry, "method"), entry.name, entry.value)
    return METHODS[name]


def _checked_plugin(cls: Any, name: str, where: str) -> type[PromptMethod]:
    if not (isinstance(cls, type) and issubclass(cls, PromptMethod) and dataclasses.is_dataclass(
            getattr(cls, "config_class", None))):
        raise MetapromptError(f"method plugin {name!r} ({where}): expected a PromptMethod subclass whose "
                              "config_class is a dataclass")
    if getattr(cls, "name", None) != name:
        raise MetapromptError(f"method plugin {name!r} ({where}): its class is named {getattr(cls, 'name', None)!r}; "
                              "expected the entry point's name")
    return cls


def make_config(name: str, values: dict[str, Any] | None = None):
    """The method's config dataclass with ``values`` applied (unknown keys are an error), an option given alone
    reconciled with the one it depends on (see :func:`metaprompt.config.with_reconciled`)."""
    cls = method_class(name).config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(values or {})
    unknown = sorted(set(values) - fields)
    if unknown:
        raise MetapromptError(f"method {name!r} has no option {', '.join(unknown)}; its options are: "
                              f"{', '.join(sorted(fields))}")
    reconcile = getattr(cls, "reconcile", None)
    if reconcile is not None:
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        values.update(reconcile({**defaults, **values}, set(values))[0])
    return cls(**values)


def build_method(name: str, clip: PromptCLIP, classnames: list[str], config=None, dataset: str = "default",
                 options: ComputeOptions | None = None) -> PromptMethod:
    cls = method_class(name)
    method = cls(config if config is not None else cls.config_class(), clip, classnames, dataset, options)
    return method.to(clip.device, clip.feature_dtype)


__all__ = ["METHODS", "Batch", "ComputeOptions", "PromptMethod", "build_method", "make_config", "method_class",
           "CoCoOp", "CoCoOpConfig", "CoOp", "CoOpConfig", "IVLP", "IVLPConfig", "KgCoOp", "KgCoOpConfig", "LinearProbe", "LinearProbeConfig", "MaPLe", "MaPLeConfig",
           "MetaPrompt", "MetaPromptConfig", "PromptSRC", "PromptSRCConfig", "VPT", "VPTConfig", "ZeroShotCLIP", "ZeroShotConfig"]
