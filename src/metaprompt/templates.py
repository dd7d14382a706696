"""Hand-crafted prompt templates, per dataset, as the field uses them.

Two tables, because the field uses two: ``ZERO_SHOT`` holds CoOp's per-dataset templates (used by
zero-shot CLIP, VPT's frozen text side and the CoOp family's baselines); ``METAPROMPT`` holds the
templates of MetaPrompt's frozen text classifier ``w_txt0`` (method doc section 2), which differ in
punctuation and for ImageNet use an ensemble of 8.
"""
from __future__ import annotations

from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from .errors import MetapromptError

IMAGENET_FAMILY = ("imagenet", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")

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

METAPROMPT_IMAGENET_ENSEMBLE = tuple(t(c="{}").rstrip(".") for t in SIMPLE_IMAGENET_TEMPLATES) + ("a photo of a {}",)

ENSEMBLES: dict[str, tuple[str, ...]] = {
    "imagenet80": tuple(t(c="{}") for t in OPENAI_IMAGENET_TEMPLATES),
    "imagenet_select": tuple(t(c="{}") for t in SIMPLE_IMAGENET_TEMPLATES),
    "metaprompt_imagenet": METAPROMPT_IMAGENET_ENSEMBLE,
}


def prompt_classname(name: str) -> str:
    """A class name as it goes into a prompt: underscores become spaces, as every reference trainer does
    (``name.replace("_", " ")``). Dataset readers keep the names the reference readers give
    (``american_bulldog``); this is the one place they are turned into words."""
    return name.replace("_", " ")


def prompt_classnames(names: list[str]) -> list[str]:
    return [prompt_classname(n) for n in names]


def templates_for(dataset: str, style: str = "zero_shot") -> tuple[str, ...]:
    """The templates for ``dataset`` in ``style``: ``zero_shot`` (CoOp's), ``metaprompt`` (the
    method's w_txt0), or the name of an ensemble in ``ENSEMBLES``."""
    if style in ENSEMBLES:
        return ENSEMBLES[style]
    if style == "metaprompt":
        if dataset in IMAGENET_FAMILY:
            return METAPROMPT_IMAGENET_ENSEMBLE
        return (METAPROMPT.get(dataset, METAPROMPT["default"]),)
    if style == "zero_shot":
        return (ZERO_SHOT.get(dataset, ZERO_SHOT["default"]),)
    raise MetapromptError(
        f"unknown template style {style!r}; expected zero_shot, metaprompt or one of {', '.join(ENSEMBLES)}")
