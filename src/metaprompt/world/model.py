"""The world's tiny CLIP: what it is (open_clip's own CLIP class, small config) and how it is stored.

A checkpoint is one safetensors file: fp16 weights, and metadata holding the open_clip model config,
the tokenizer vocabulary and the image normalisation, so that loading needs nothing else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
from open_clip.model import CLIP
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import MetapromptError
from ..files import atomic_write
from .tokenizer import DEFAULT_CONTEXT_LENGTH, WorldTokenizer

SHIPPED_CHECKPOINT = "world-tiny.safetensors"
FORMAT = "metaprompt-world-clip/1"


def model_config(vocab_size: int, image_size: int, context_length: int = DEFAULT_CONTEXT_LENGTH) -> dict[str, Any]:
    """The open_clip CLIP config of the world's model: a 4-layer ViT (patch 8) and a 4-layer text
    transformer, both 128 wide, with open_clip's default poolings (CLS token; argmax = EOT)."""
    return {
        "embed_dim": 128,
        "quick_gelu": False,
        "vision_cfg": {"image_size": image_size, "patch_size": 8, "width": 128, "layers": 4, "head_width": 64},
        "text_cfg": {"context_length": context_length, "vocab_size": vocab_size, "width": 128, "heads": 2,
                     "layers": 4},
    }


def build_model(config: dict[str, Any]) -> CLIP:
    return CLIP(**config)


@dataclass(frozen=True)
class WorldCLIP:
    """A loaded world CLIP: the model (fp32, eval mode), its tokenizer and its image normalisation."""

    model: CLIP
    tokenizer: Callable[[list[str]], torch.LongTensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def save_world_clip(path: str | Path, model: CLIP, config: dict[str, Any], tokenizer: WorldTokenizer,
                    mean: tuple[float, ...], std: tuple[float, ...], extra: dict[str, Any]) -> None:
    """Write ``model`` in fp16 with everything :func:`load_world_clip` needs as metadata; ``extra``
    (JSON-able) records how it was made."""
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "config": json.dumps(config),
        "vocab": json.dumps(tokenizer.vocab),
        "context_length": str(tokenizer.context_length),
        "image_size": str(config["vision_cfg"]["image_size"]),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        **{k: json.dumps(v) for k, v in extra.items()},
    }
    atomic_write(path, lambda tmp: save_file(weights, str(tmp), metadata=metadata))


def _checked_metadata(path: Path, f) -> dict[str, str]:
    metadata = f.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise MetapromptError(f"{path}: expected a world CLIP checkpoint (format {FORMAT}), "
                              f"found format {metadata.get('format')!r}")
    return metadata


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise MetapromptError(f"world CLIP checkpoint {path} not found (expected a .safetensors file; "
                              "--pretrained none loads the one shipped with the package)")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, _checked_metadata(path, f)
    except (SafetensorError, OSError) as err:
        raise MetapromptError(f"{path}: not a world CLIP checkpoint (expected a .safetensors file written by "
                              f"`metaprompt world pretrain`: {' '.join(str(err).split())})") from None


def load_world_clip(path: str | Path | None = None) -> WorldCLIP:
    """Load a world CLIP checkpoint; by default the one shipped inside the package."""
    if path is None:
        with resources.as_file(resources.files(__package__) / SHIPPED_CHECKPOINT) as shipped:
            weights, metadata = _read(shipped)
    else:
        weights, metadata = _read(Path(path))
    try:
        model = build_model(json.loads(metadata["config"]))
        model.load_state_dict({k: v.float() for k, v in weights.items()})
        tokenizer = WorldTokenizer(json.loads(metadata["vocab"]), int(metadata["context_length"]))
        return WorldCLIP(model=model.eval(), tokenizer=tokenizer, image_size=int(metadata["image_size"]),
                         mean=tuple(json.loads(metadata["mean"])), std=tuple(json.loads(metadata["std"])))
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise MetapromptError(f"{path}: a damaged world CLIP checkpoint ({' '.join(str(err).split())[:200]}); "
                              "expected the file `metaprompt world pretrain` writes") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata (config, vocabulary, normalisation, how it was made), JSON decoded."""
    with safe_open(str(path), framework="pt") as f:
        metadata = _checked_metadata(Path(path), f)
    return {k: v if k == "format" else json.loads(v) for k, v in metadata.items()}
