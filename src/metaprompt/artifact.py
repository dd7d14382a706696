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


def save_artifact(path: str | Path, method: PromptMethod) -> Path:
    """Write the method's trained tensors and metadata, atomically."""
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
        return Artifact(method=meta["method"], config=json.loads(meta["config"]), model=meta["model"],
                        pretrained=json.loads(meta["pretrained"]), classnames=json.loads(meta["classnames"]),
                        dataset=meta.get("dataset", "default"), tensors=tensors,
                        precision=meta.get("precision", "fp32"))
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise MetapromptError(f"prompt artifact {path} is corrupted or not a metaprompt artifact "
                              f"(expected a safetensors file written by metaprompt train: {err})") from None


def load_method(path: str | Path, device: str | torch.device = "cpu", clip: PromptCLIP | None = None,
                pretrained: str | None = None, precision: str | None = None) -> PromptMethod:
    """Rebuild the trained method from an artifact (loading its CLIP unless one is given), in ``precision``
    (default: the one it was trained in, as the device runs it)."""
    art = read_artifact(path)
    if clip is None:
        clip = load_clip(art.model, pretrained or art.pretrained, device=device, precision=precision or art.precision)
    method = build_method(art.method, clip, art.classnames, make_config(art.method, art.config), art.dataset)
    method.load_trained_tensors(art.tensors, source=str(path))
    return method
