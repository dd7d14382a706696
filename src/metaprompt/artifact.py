"""Trained prompt artifacts: a safetensors file holding only what was trained (never CLIP weights),
with the method, its config, the model's name / pretrained tag and the class names in its metadata.

Tensor names (see README): ``text_prompts`` [depth, n_ctx, d_text], ``visual_prompts`` [depth, n_vis,
d_vis], ``class_text_prompts`` [C, n_ctx, d_text] (class-specific CoOp), ``meta_net.*`` (CoCoOp),
``couplings.<layer>.{weight,bias}`` (MaPLe).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .clip import PromptCLIP, load_clip
from .errors import MetapromptError
from .files import atomic_write
from .methods import PromptMethod, build_method, make_config

FORMAT = "metaprompt-prompts/1"
KNOWN_METADATA = ("format", "metaprompt_version", "method", "config", "model", "pretrained", "classnames", "dataset",
                  "precision")


@dataclass
class Artifact:
    method: str
    config: dict
    model: str
    pretrained: str | None
    classnames: list[str]
    dataset: str
    tensors: dict[str, torch.Tensor]
    precision: str = "fp32"
    """The precision it was trained in (artifacts written before it was recorded: fp32)."""
    extra: dict[str, str] = dataclasses.field(default_factory=dict)
    """Other metadata, as written (``imported_from``: the checkpoint `metaprompt import` read, as JSON)."""


def save_artifact(path: str | Path, method: PromptMethod, extra: dict[str, str] | None = None) -> Path:
    """Write the method's trained tensors and metadata (and ``extra`` metadata: ``imported_from``), atomically."""
    path = Path(path)
    meta = {
        "format": FORMAT,
        "metaprompt_version": __version__,
        "method": method.name,
        "config": json.dumps(dataclasses.asdict(method.cfg)),
        "model": method.clip.source.name,
        "pretrained": json.dumps(method.clip.source.pretrained),
        "classnames": json.dumps(method.classnames),
        "dataset": method.dataset,
        "precision": method.clip.precision,
        **(extra or {}),
    }
    return atomic_write(path, lambda tmp: save_file(method.trained_tensors(), str(tmp), metadata=meta))


def read_artifact(path: str | Path) -> Artifact:
    path = Path(path)
    if not path.is_file():
        raise MetapromptError(f"prompt artifact {path} does not exist")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            meta = json.loads(fh.read(header_len)).get("__metadata__", {})
        art = Artifact(method=meta["method"], config=json.loads(meta["config"]), model=meta["model"],
                       pretrained=json.loads(meta["pretrained"]), classnames=json.loads(meta["classnames"]),
                       dataset=meta.get("dataset", "default"), tensors=tensors,
                       precision=meta.get("precision", "fp32"),
                       extra={k: v for k, v in meta.items() if k not in KNOWN_METADATA})
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MetapromptError(f"prompt artifact {path} is corrupted or not a metaprompt artifact "
                              f"(expected a safetensors file written by metaprompt train: {err})") from None
    problem = _metadata_problem(art) or _tensor_problem(art.tensors)
    if problem:
        raise MetapromptError(f"prompt artifact {path}: {problem}")
    return art


METADATA_TYPES = {"method": str, "config": dict, "model": str, "pretrained": (str, type(None)), "classnames": list,
                  "dataset": str, "precision": str}


def _metadata_problem(art: Artifact) -> str:
    """What is wrong with an artifact's metadata ('' when nothing is)."""
    for name, kind in METADATA_TYPES.items():
        if not isinstance(getattr(art, name), kind):
            return f"its metadata's {name} is {getattr(art, name)!r}; expected a {_kind(kind)}"
    if not art.classnames or not all(isinstance(c, str) and c.strip() for c in art.classnames):
        return f"its metadata's classnames are {art.classnames!r}; expected a list of non-empty class names"
    duplicated = sorted({c for c in art.classnames if art.classnames.count(c) > 1})
    if duplicated:
        return f"its class names repeat {', '.join(map(repr, duplicated))}; expected each class once"
    return ""


def _tensor_problem(tensors: dict[str, torch.Tensor]) -> str:
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    return f"{', '.join(bad)} hold NaN or infinite values (a diverged run?); expected finite prompts" if bad else ""


def _kind(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({str: "string", dict: "JSON object", list: "list", type(None): "null"}[k] for k in kinds)


def weights_source(art: Artifact, path: Path, pretrained: str | None) -> str | None:
    """Where the artifact's CLIP weights come from: ``pretrained`` when the user gives it; the artifact's own
    tag (``openai``, the world model's shipped weights) otherwise. A local file named in the artifact's metadata
    is not opened unless the user names it: the artifact may come from elsewhere, and so may that path."""
    if pretrained is not None:
        return None if pretrained.lower() == "none" else pretrained
    if art.pretrained is not None and _is_path(art.pretrained):
        raise MetapromptError(f"prompt artifact {path} was trained on CLIP weights from the local file "
                              f"{art.pretrained}; a file named in an artifact is not opened unless you name it: pass "
                              "--pretrained FILE (those weights, or your copy of them)")
    return art.pretrained


def model_source(art: Artifact, path: Path, model: str | None) -> str:
    """The model to build: ``model`` when the user gives it, the artifact's otherwise, unless that is a local
    config file (which is not opened unless the user names it, as for weights)."""
    if model is not None:
        return model
    if art.model.endswith(".json") or art.model.startswith("local-dir:"):
        raise MetapromptError(f"prompt artifact {path} was trained on a model built from the local file {art.model}; a "
                              "file named in an artifact is not opened unless you name it: pass --model FILE")
    return art.model


def _is_path(pretrained: str) -> bool:
    return "/" in pretrained or "\\" in pretrained or pretrained.endswith(
        (".pt", ".pth", ".bin", ".safetensors", ".ckpt"))


def load_method(path: str | Path, device: str | torch.device = "cpu", clip: PromptCLIP | None = None,
                pretrained: str | None = None, precision: str | None = None, model: str | None = None) -> PromptMethod:
    """Rebuild the trained method from an artifact (loading its CLIP unless one is given), in ``precision``
    (default: the one it was trained in, as the device runs it). ``model`` / ``pretrained``: the CLIP to load
    instead of the one the artifact names (needed where it names local files, see :func:`weights_source`)."""
    art = read_artifact(path)
    if clip is None:
        clip = load_clip(model_source(art, Path(path), model), weights_source(art, Path(path), pretrained),
                         device=device, precision=precision or art.precision)
    method = build_method(art.method, clip, art.classnames, make_config(art.method, art.config), art.dataset)
    method.load_trained_tensors(art.tensors, source=str(path))
    return method
