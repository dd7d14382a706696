"""Trained prompts as a plain classifier head: for a method whose class features depend on no image and whose
image features are CLIP's own (zero-shot CLIP, CoOp, KgCoOp), the logits of an image are

    logit_scale * normalize(model.encode_image(image)) @ classifier.T

with ``classifier`` the normalised class text features [C, D]. Exported once, they need neither this library
nor the prompts: plain open_clip's ``encode_image`` and one matrix product (docs/export.md)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import MetapromptError
from .files import atomic_write
from .methods import PromptMethod

FORMAT = "metaprompt-head/1"


def why_not_exportable(method: type[PromptMethod]) -> str | None:
    """Why the logits of a method of this class are not a fixed head on CLIP's own image features, or None
    when they are."""
    if method.closed_form:
        return (f"{method.name} is already a head on CLIP's unnormalised image features: its artifact's weight and "
                "bias are the classifier (logits = encode_image(x) @ weight.T + bias)")
    if not method.frozen_image_encoder:
        return (f"{method.name} prompts the image encoder too: its image features come from its visual prompts, "
                "which plain open_clip encode_image does not have")
    if not method.image_independent_text:
        return (f"{method.name}'s class features depend on each image (its meta-net conditions the context on the "
                "image features): there is no fixed classifier to export")
    return None


def class_head(method: PromptMethod) -> tuple[torch.Tensor, torch.Tensor]:
    """(the normalised class features [C, D] in fp32, the logit scale) of ``method``'s current classes."""
    problem = why_not_exportable(type(method))
    if problem:
        raise MetapromptError(f"cannot export {method.name} as a classifier head: {problem}")
    with method.evaluation():
        classifier = method.text_features().float().cpu().contiguous()
        scale = method.clip.logit_scale.detach().float().cpu().reshape(1)
    return classifier, scale


def export_head(method: PromptMethod, out: str | Path) -> Path:
    """Write ``method``'s classifier head, with what plain open_clip needs to use it, atomically."""
    classifier, scale = class_head(method)
    clip = method.clip
    meta = {"format": FORMAT, "method": method.name, "classnames": json.dumps(method.classnames),
            "model": clip.source.name, "open_clip_model": json.dumps(clip.open_clip_name),
            "pretrained": json.dumps(clip.source.pretrained), "force_quick_gelu": json.dumps(clip.quick_gelu),
            "usage": "logits = logit_scale * normalize(model.encode_image(x), dim=-1) @ classifier.T"}
    try:
        return atomic_write(Path(out), lambda tmp: save_file({"classifier": classifier, "logit_scale": scale},
                                                              str(tmp), metadata=meta))
    except OSError as err:
        raise MetapromptError(f"cannot write {out} ({err.strerror})") from None
