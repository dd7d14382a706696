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


PAPER = ("Zhao et al., Learning Domain Invariant Prompt for Vision-Language Models (MetaPrompt), IEEE TIP 2024, "
         "ViT-B/16")
PUBLISHED_BASE_TO_NEW = {
    "zeroshot": (69.34, 74.22, 71.70), "coop": (82.69, 63.22, 71.66), "cocoop": (80.47, 71.69, 75.83),
    "maple": (82.28, 75.14, 78.55), "metaprompt": (83.38, 76.09, 79.57), "promptsrc": (84.26, 76.10, 79.97),
}
"""Base / New / HM averaged over the 11 base-to-new datasets, as the paper's base-to-new table gives them (and, for
the methods of :data:`PUBLISHED_ELSEWHERE`, as their own repositories give them)."""
PUBLISHED_ELSEWHERE = {
    "kgcoop": ((80.73, 73.6, 77.0), "Yao et al., KgCoOp, CVPR 2023, as the README of htyao89/KgCoOp (c43ccc3) gives it"),
    "vpt": ((80.24, 73.43, 76.68), "the README of muzairkhattak/multimodal-prompt-learning (69bce21), row 'Deep Vision "
                                   "Prompting', config VPT/vit_b16_c2_ep5_batch4_4.yaml"),
    "ivlp": ((82.15, 74.07, 77.90), "the README of muzairkhattak/multimodal-prompt-learning (69bce21), row "
                                    "'Independent V-L Prompting', config IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml"),
}
"""Base-to-new averages the MetaPrompt paper does not give, each with its source: for KgCoOp its authors' own, for
VPT and IVLP MaPLe's authors' runs of the configs this project's presets follow."""
PUBLISHED_BASE_TO_NEW |= {method: numbers for method, (numbers, _) in PUBLISHED_ELSEWHERE.items()}
PUBLISHED_DG = {
    ("cocoop", 5): {"pacs": 96.7, "vlcs": 78.3, "office_home": 84.1, "domainnet": 61.1},
    ("metaprompt", 1): {"pacs": 96.9, "vlcs": 81.1, "office_home": 84.1, "domainnet": 61.2},
    ("metaprompt", 5): {"pacs": 97.0, "vlcs": 82.6, "office_home": 85.2, "domainnet": 61.8},
}
"""Leave-one-domain-out accuracy averaged over target domains, by (method, shots per class per source domain), as
the paper's domain-generalisation table gives them. (Its two zero-shot rows, "CLIP zero-shot" and "CLIP with
template", are not matched to this project's zero-shot run: which template each used is not said there.)"""


def harmonic_mean(base: float, new: float) -> float:
    """The base-to-new summary HM = 2BN / (B + N) (0 when both are 0)."""
    return 2 * base * new / (base + new) if base + new else 0.0


def read_result(path: str | Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON, bad bytes
        raise MetapromptError(f"{path}: unreadable result ({' '.join(str(err).split())}); delete it to run that "
                              "run again") from None


def load_results(folder: str | Path, warn=None) -> list[dict]:
    """Every well-formed result under ``folder`` (searched recursively). A damaged one is skipped with one line
    to ``warn`` (stderr by default) naming it and what was expected."""
    import sys

    warn = warn or (lambda line: print(f"metaprompt: warning: {line}", file=sys.stderr))
    if not Path(folder).is_dir():
        raise MetapromptError(f"{folder} is not a folder (expected the --out folder of `metaprompt run`)")
    paths = sorted(Path(folder).rglob(RESULT_NAME))
    if not paths:
        raise MetapromptError(f"no {RESULT_NAME} under {folder} (expected the --out folder of `metaprompt run`)")
    results = []
    for path in paths:
        try:
            results.append(checked_result(read_result(path), path))
        except MetapromptError as err:
            warn(f"skipped {err}")
    if not results:
        raise MetapromptError(f"no readable {RESULT_NAME} under {folder} (every one was skipped, see above)")
    return results


RESULT_FIELDS = {"protocol": str, "name": str, "method": str, "dataset": str, "seed": int, "metrics": dict}
"""What a table needs of a result, and its type."""


def checked_result(result, path: Path) -> dict:
    """``result`` when it has what a table needs: the fields above, finite numbers as metrics, a shot count;
    its cost is dropped (the tables go on) when it is not a mapping of finite numbers."""
    if not isinstance(result, dict):
        raise MetapromptError(f"{path}: expected a JSON object, found {type(result).__name__}")
    for key, kind in RESULT_FIELDS.items():
        if not isinstance(result.get(key), kind) or isinstance(result.get(key), bool):
            raise MetapromptError(f"{path}: expected {key!r} to be a {kind.__name__}, found {result.get(key)!r}")
    bad = [k for k, v in result["metrics"].items() if not _finite(v) or not 0 <= v <= 100]
    if bad or not result["metrics"]:
        raise MetapromptError(f"{path}: expected metrics to be accuracies (numbers from 0 to 100), found "
                              f"{ {k: result['metrics'][k] for k in bad} or 'none'}")
    if not isinstance(result.get("shots", 0), int) or isinstance(result.get("shots"), bool):
        raise MetapromptError(f"{path}: expected 'shots' to be an int, found {result.get('shots')!r}")
    cost = result.get("cost")
    if cost is not None and not (isinstance(cost, dict) and all(v is None or _finite(v) or isinstance(v, str)
                                                                for v in cost.values())):
        result = {**result, "cost": None}
    elif isinstance(cost, dict):
        result = {**result, "cost": {k: v for k, v in cost.items() if v is None or _finite(v) or k == "peak_memory_of"}}
    return result


def _finite(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
