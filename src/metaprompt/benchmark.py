"""What the field's benchmark tables are made of, and the results the sweeps leave on disk; no torch here, so
that tabulating a finished sweep (``metaprompt report``) starts in a fraction of a second.

- base-to-new: 11 datasets (MetaPrompt paper, Table 1), HM = 2 Base New / (Base + New);
- domain generalisation: the datasets and their domains, in their released order (a source domain's id in
  the released code is its index among the sources in this order);
- cross-dataset transfer: from ImageNet to the other ten datasets, and ImageNet's four variants.
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import MetapromptError

RESULT_NAME = "result.json"
BASE_TO_NEW_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                        "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
IMAGENET_VARIANTS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
IMAGENET_FAMILY = ("imagenet", *IMAGENET_VARIANTS)
CROSS_DATASET_TARGETS = BASE_TO_NEW_DATASETS[1:] + IMAGENET_VARIANTS
"""The targets of cross-dataset transfer from ImageNet: the other ten datasets, then the ImageNet variants."""
DG_DOMAINS: dict[str, tuple[str, ...]] = {
    "pacs": ("art_painting", "cartoon", "photo", "sketch"),
    "vlcs": ("caltech", "labelme", "pascal", "sun"),
    "office_home": ("art", "clipart", "product", "real_world"),
    "domainnet": ("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
    "world_dg": ("photo", "cartoon", "sketch", "painting"),
}
METHOD_ORDER = ("zeroshot", "linear_probe", "coop", "cocoop", "kgcoop", "vpt", "ivlp", "maple", "promptsrc", "metaprompt")
"""Methods in the literature's order (zero-shot CLIP first, MetaPrompt last), for tables."""


def harmonic_mean(base: float, new: float) -> float:
    """The base-to-new summary HM = 2BN / (B + N) (0 when both are 0)."""
    return 2 * base * new / (base + new) if base + new else 0.0


def read_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise MetapromptError(f"{path}: unreadable result ({err}); delete it to run that run again") from None


def load_results(folder: str | Path) -> list[dict]:
    """Every result under ``folder`` (searched recursively)."""
    paths = sorted(Path(folder).rglob(RESULT_NAME))
    if not paths:
        raise MetapromptError(f"no {RESULT_NAME} under {folder} (expected the --out folder of `metaprompt run`)")
    return [read_result(path) for path in paths]
