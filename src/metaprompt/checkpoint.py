"""Training checkpoints: what a run needs to resume bit-identically (trained tensors, optimiser, progress, every
random state), written atomically and read back with ``torch.load(weights_only=True)``.

A checkpoint holds only tensors and plain values (numbers, strings, lists, tuples, dicts; numpy's RNG state is
stored as a tensor), so it is read without unpickling arbitrary objects: a file planted in a run folder cannot
run code when the run resumes; it is refused.
"""
from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from .errors import MetapromptError
from .files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` (tensors and plain values only) to ``path`` atomically."""
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: Path) -> dict:
    """The payload :func:`save_checkpoint` wrote; a file holding anything else is refused unread."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise MetapromptError(f"checkpoint {path} holds objects other than tensors and plain values, so it was not "
                              f"loaded ({first}); it was not written by this version of metaprompt: delete it to "
                              "start the run over") from None
    except Exception as err:  # noqa: BLE001 - a damaged file can fail in many ways
        raise MetapromptError(f"checkpoint {path} is unreadable ({err}); delete it to start over") from None


def rng_states(method_state: dict, device: torch.device) -> dict:
    """Python's, numpy's and torch's random states, the state of the run's GPU when it runs on one (only that
    GPU's: a run resumed on a machine with fewer GPUs restores what it used), and the method's own."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(),
              "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
              "torch": torch.get_rng_state(), "method": method_state}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict, device: torch.device) -> dict:
    """Restore what :func:`rng_states` returned (the GPU state onto the run's GPU, when both have one);
    returns the method's own state."""
    random.setstate(states["python"])
    numpy = states["numpy"]
    np.random.set_state((numpy["name"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and isinstance(states.get("cuda"), torch.Tensor):
        torch.cuda.set_rng_state(states["cuda"], device)
    return states.get("method", {})
