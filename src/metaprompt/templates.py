"""Hand-crafted prompt templates, per dataset, as the field uses them.

Two tables, because the field uses two: ``ZERO_SHOT`` holds CoOp's per-dataset templates (used by
zero-shot CLIP, VPT's frozen text side and the CoOp family's baselines); ``METAPROMPT`` holds the
templates of MetaPrompt's frozen text classifier ``w_txt0`` (method doc section 2), which differ in
punctuation and for ImageNet use an ensemble of 8. The ensembles come from open_clip's template lists,
read when first asked for, so that the tables here import no torch.
"""
from __future__ import annotations

from functools import lru_cache

from .benchmark import IMAGENET_FAMILY
from .errors import MetapromptError


ZERO_SHOT: dict[str, str] = {
    "default": "a photo of a {}.",
    "oxford_pets": "a photo of a {}, a type of pet.",
    "oxford_flowers": "a photo of a {}, a type of flower.",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft.",
    "dtd": "{} texture.",
    "eurosat": "a centered satellite photo of {}.",
    "food101": "a photo of {}, a type of food.",
    "ucf101": "a photo of a person doing {}.",
}

METAPROMPT: dict[str, str] = {
    "default": "a photo of a {}",
    "oxford_flowers": "a photo of a {}, a type of flower",
    "food101": "a photo of a {}, a type of food",
    "fgvc_aircraft": "a photo of a {}, a type of aircraft",
    "oxford_pets": "a photo of a {}, a type of pet",
    "dtd": "{} texture",
    "eurosat": "a centered satellite photo of {}",
    "ucf101": "a photo of a person doing {}",
}

ENSEMBLE_NAMES = ("imagenet80", "imagenet_select", "metaprompt_imagenet", "promptsrc60")
"""OpenAI's 80 ImageNet templates, its selection of 7, MetaPrompt's ImageNet ensemble (the 7, without
their full stops, and ``a photo of a {}``), and PromptSRC's 60 (OpenAI's first 60: PromptSRC's
trainers/imagenet_templates.py lists exactly these, in another order, which changes a mean by rounding only)."""
TEMPLATE_STYLES = ("zero_shot", "metaprompt", *ENSEMBLE_NAMES)


@lru_cache(maxsize=None)
def ensemble(name: str) -> tuple[str, ...]:
    """The templates of the ensemble ``name`` (one of ``ENSEMBLE_NAMES``)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if name == "imagenet80":
        return tuple(t(c="{}") for t in OPENAI_IMAGENET_TEMPLATES)
    if name == "promptsrc60":
        return ensemble("imagenet80")[:60]
    if name == "imagenet_select":
        return tuple(t(c="{}") for t in SIMPLE_IMAGENET_TEMPLATES)
    if name == "metaprompt_imagenet":
        return tuple(t(c="{}").rstrip(".") for t in SIMPLE_IMAGENET_TEMPLATES) + ("a photo of a {}",)
    raise MetapromptError(f"unknown template ensemble {name!r}; expected one of {', '.join(ENSEMBLE_NAMES)}")


def prompt_classname(name: str) -> str:
    """A class name as it goes into a prompt: underscores become spaces, as every reference trainer does
    (``name.replace("_", " ")``). Dataset readers keep the names the reference readers give
    (``american_bulldog``); this is the one place they are turned into words."""
    return name.replace("_", " ")


def prompt_classnames(names: list[str]) -> list[str]:
    return [prompt_classname(n) for n in names]


def templates_for(dataset: str, style: str = "zero_shot") -> tuple[str, ...]:
    """The templates for ``dataset`` in ``style``: ``zero_shot`` (CoOp's), ``metaprompt`` (the
    method's w_txt0), or the name of an ensemble in ``ENSEMBLE_NAMES``."""
    if style in ENSEMBLE_NAMES:
        return ensemble(style)
    if style == "metaprompt":
        if dataset in IMAGENET_FAMILY:
            return ensemble("metaprompt_imagenet")
        return (METAPROMPT.get(dataset, METAPROMPT["default"]),)
    if style == "zero_shot":
        return (ZERO_SHOT.get(dataset, ZERO_SHOT["default"]),)
    raise MetapromptError(
        f"unknown template style {style!r}; expected zero_shot, metaprompt or one of {', '.join(ENSEMBLE_NAMES)}")
