"""What the tests build for themselves and share: tiny random-weight open_clip models, image folders, and the
command lines that run `metaprompt train` in-process, in a subprocess or under torchrun. (Fake on-disk layouts
of the real datasets are in data_layouts.py; fixtures in conftest.py.) The tests find these modules on
pytest's ``pythonpath`` (pyproject.toml)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 3},
}


def tiny_config_file(folder: Path, name: str = "tiny-vit") -> Path:
    """Write an open_clip model config JSON for a 3-layer, 32 px CLIP; pass its path as the model name."""
    path = Path(folder) / f"{name}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


def tiny_checkpoint(config: Path, seed: int = 0) -> Path:
    """Random weights for the config, saved as a state-dict file (pass it as --pretrained)."""
    import open_clip

    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(Path(config).stem)
    path = Path(config).with_suffix(".pt")
    torch.save(model.state_dict(), path)
    return path


def make_image_folder(root: Path, classes: list[str], per_class: dict[str, int], size: int = 32,
                      seed: int = 0) -> Path:
    """``root/<split>/<class>/<i>.png`` with coloured noise images whose mean colour depends on the class."""
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for k, cls in enumerate(classes):
            folder = Path(root) / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([(37 * k) % 256, (91 * k) % 256, (53 * k + 100) % 256], dtype=np.float32)
            for i in range(n):
                img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return Path(root)


# ------------------------------------------------------------------ command lines

SMALL = {"coop": ["ctx_init=a photo"], "metaprompt": ["text_depth=2", "vision_depth=2"]}
"""Options that keep each method small on the tiny model."""


def train_args(method: str, root: Path, out: Path, model: tuple[str, str], *sets: str,
               dataset: str = "imagefolder", extra: tuple[str, ...] = (), progress: bool = False) -> list[str]:
    """`metaprompt train` arguments (without the program name) on the tiny model, with no loader workers."""
    args = ["train", "--method", method, "--dataset", dataset, "--root", str(root), "--out", str(out),
            "--model", model[0], "--pretrained", model[1], "--workers", "0", *extra]
    args += [] if progress else ["--no-progress"]
    for assignment in [*SMALL.get(method, []), *sets]:
        args += ["--set", assignment]
    return args


def metaprompt_command(args: list[str]) -> list[str]:
    """The command line that runs ``args`` in a fresh Python process, as a user types it."""
    return [sys.executable, "-m", "metaprompt", *args]


def one_thread_env() -> dict[str, str]:
    """The environment for a subprocess, with one torch thread (as conftest sets for the tests' own process)."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def prompts(run: Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a finished run."""
    return load_file(str(run / "prompts.safetensors"))
