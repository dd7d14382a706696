"""Where CLIP weights come from and what they need: local checkpoint files (OpenAI's own included) and the
activation the weights were trained with.

OpenAI's CLIP weights were trained with QuickGELU (``x * sigmoid(1.702 x)``); open_clip's plain ``ViT-B-16``
config builds ``nn.GELU``, and open_clip 3.x only warns when the two are paired. With the wrong activation
every feature is off (by 2.8e-2 on ViT-B/16's ``encode_image``), so the loader decides the activation here:

1. a model whose own config asks for QuickGELU (a ``-quickgelu`` name, or a config JSON saying so) gets it;
2. OpenAI's weights (the ``openai`` tag, an OpenAI checkpoint file) get QuickGELU;
3. another open_clip tag gets what open_clip's pretrained registry says it was trained with;
4. anything else (random weights, another checkpoint file) gets what the model's config says.

When the model's config and the weights disagree (cases 1 and 3) the loader says so in one line.

OpenAI distributes its weights as TorchScript archives (``ViT-B-16.pt``); their state dict, like one saved
from such an archive, carries ``input_resolution``, ``context_length`` and ``vocab_size`` beside the
weights, which is how an OpenAI state-dict file is recognised. A TorchScript archive is read with
``torch.jit.load`` (it holds TorchScript, not pickled Python); any other ``.pt`` file is read with
``weights_only=True``, so a file never runs pickled code.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg

from .errors import MetapromptError

OPENAI_TAG = "openai"
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
"""Entries of an OpenAI state dict that are not weights (clip.build_model deletes them)."""


@dataclass(frozen=True)
class CheckpointFile:
    """The weights of a local checkpoint file, and whether they are OpenAI's."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    openai: bool
    torchscript: bool


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``constants.pkl`` (a torch.save file holds none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def read_checkpoint(path: str | Path) -> CheckpointFile:
    """The state dict of a checkpoint file: safetensors, a torch.save'd state dict (or ``{"state_dict":
    ...}``), or an OpenAI TorchScript archive."""
    path = Path(path)
    torchscript = False
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    elif is_torchscript(path):
        state, torchscript = _read_torchscript(path), True
    else:
        state = _read_state_dict(path)
    if state and next(iter(state)).startswith("module."):
        state = {k[len("module."):]: v for k, v in state.items()}
    openai = torchscript or any(key in state for key in OPENAI_EXTRA_KEYS)
    weights = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}
    return CheckpointFile(path, weights, openai, torchscript)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except SafetensorError as err:
        raise MetapromptError(f"checkpoint {path} is not a readable safetensors file ({err})") from None


def _read_torchscript(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, yet this is the format
            return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    except RuntimeError as err:
        raise MetapromptError(f"checkpoint {path} looks like a TorchScript archive but cannot be read "
                              f"({str(err).splitlines()[0]})") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise MetapromptError(
            f"checkpoint {path} holds pickled Python objects, which are not read (they could run code): "
            f"{str(err).splitlines()[0]}; expected a state dict of tensors, a safetensors file or OpenAI's "
            "TorchScript archive") from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise MetapromptError(f"checkpoint {path} is unreadable ({str(err).splitlines()[0]}); expected a "
                              "state dict, a safetensors file or OpenAI's TorchScript archive") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise MetapromptError(f"checkpoint {path} is not a state dict (a mapping of names to tensors)")
    return loaded


def load_openai_state_dict(model: torch.nn.Module, checkpoint: CheckpointFile, arch: str) -> None:
    """Load OpenAI-format weights into an open_clip CLIP (the same parameter names), checking they fit."""
    state = dict(checkpoint.state_dict)
    own = model.state_dict()
    if "logit_scale" in state and state["logit_scale"].shape != own["logit_scale"].shape:
        state["logit_scale"] = state["logit_scale"].reshape(own["logit_scale"].shape)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            f"other shapes for {wrong[:3]}" if wrong else "") if part)
        raise MetapromptError(f"checkpoint {checkpoint.path} does not fit model {arch!r} ({detail}); pass the "
                              f"--model its weights were trained with (e.g. ViT-B-16 for OpenAI's ViT-B-16.pt)")
    model.load_state_dict(state, strict=True)


def quick_gelu_for(arch: str, tag: str | None, openai_weights: bool,
                   warn: Callable[[str], None] = lambda message: None) -> bool:
    """Whether model ``arch`` must be built with QuickGELU for its weights (the rule in the module
    docstring); ``tag`` is the pretrained tag (None for a file or random weights)."""
    configured = bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))
    trained_with = _trained_with_quick_gelu(arch, tag, openai_weights)
    if configured:
        if trained_with is False:
            warn(f"model {arch!r} uses QuickGELU but the weights {tag!r} were trained with GELU (open_clip's "
                 f"registry says so); use the model name without -quickgelu for the weights' own activation")
        return True
    if trained_with and not openai_weights:
        warn(f"the weights {tag!r} were trained with QuickGELU (open_clip's registry says so), so model {arch!r} "
             f"is built with QuickGELU although its config says GELU")
    return bool(trained_with)


def _trained_with_quick_gelu(arch: str, tag: str | None, openai_weights: bool) -> bool | None:
    """True / False when the weights' activation is known (OpenAI's, or a registered tag); None otherwise."""
    if openai_weights:
        return True
    if tag:
        return bool(get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    return None
