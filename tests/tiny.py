"""Tiny random-weight open_clip models and image folders that the tests build themselves."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

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
    import torch

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
