"""Backbones beyond ViT-B/16 without hand edits: every method builds and trains a step on open_clip
architectures of other widths and patch sizes (ViT-B/32 and ViT-L/14 shapes, at 2 blocks per tower so that they
fit a CPU test), and on towers it cannot prompt (a ResNet image tower; a timm image tower with a last-token,
non-native text tower, as SigLIP's) it says in one line what is unsupported; what needs no prompt there still
runs, on the tower's own pooling."""
from __future__ import annotations

import json

import pytest
import torch

from metaprompt.clip import load_clip
from metaprompt.errors import MetapromptError
from metaprompt.methods import METHODS, Batch, build_method, make_config

TEXT = {"context_length": 77, "vocab_size": 49408, "layers": 2}
SHAPES = {  # the published widths and patch sizes, 2 blocks per tower
    "vit-b-32-shape": {"embed_dim": 512, "vision_cfg": {"image_size": 64, "layers": 2, "width": 768, "patch_size": 32},
                       "text_cfg": {**TEXT, "width": 512, "heads": 8}},
    "vit-l-14-shape": {"embed_dim": 768, "vision_cfg": {"image_size": 56, "layers": 2, "width": 1024, "patch_size": 14},
                       "text_cfg": {**TEXT, "width": 768, "heads": 12}},
}
UNPROMPTABLE = {
    "resnet-shape": {"embed_dim": 64, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16,
                                                     "patch_size": None},
                     "text_cfg": {**TEXT, "width": 64, "heads": 2}},
    "timm-tower-shape": {"embed_dim": 64, "init_logit_bias": -10, "custom_text": True,
                     "vision_cfg": {"image_size": 224, "timm_model_name": "vit_tiny_patch16_224",
                                    "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear"},
                     "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                                  "no_causal_mask": True, "proj_bias": True, "pool_type": "last"}},
}
SMALL = {"zeroshot": {}, "linear_probe": {}, "coop": {}, "cocoop": {}, "kgcoop": {}, "vpt": {"depth": 2, "n_vis": 2},
         "ivlp": {"text_depth": 2, "vision_depth": 2}, "maple": {"depth": 2},
         "promptsrc": {"text_depth": 2, "vision_depth": 2}, "metaprompt": {"text_depth": 2, "vision_depth": 2}}
CLASSES = ["ant", "bee", "cat", "dog"]


def clip_of(name: str, config: dict, folder) -> "PromptCLIP":  # noqa: F821
    path = folder / f"{name}.json"
    path.write_text(json.dumps(config))
    torch.manual_seed(0)
    return load_clip(str(path), None, precision="fp32")


@pytest.fixture(scope="module", params=list(SHAPES))
def shaped_clip(request, tmp_path_factory):
    return clip_of(request.param, SHAPES[request.param], tmp_path_factory.mktemp("configs"))


def test_every_method_is_listed_here():
    assert set(SMALL) == set(METHODS)


@pytest.mark.parametrize("method", [m for m in SMALL if m not in ("zeroshot", "linear_probe")])
def test_every_method_trains_a_step_on_other_widths_and_patch_sizes(method, shaped_clip):
    m = build_method(method, shaped_clip, CLASSES, make_config(method, SMALL[method]))
    for name, tensor in m.trained_tensors().items():  # widths from the model, none written in
        if name.startswith("text_prompts") or name == "class_text_prompts":
            assert tensor.shape[-1] == shaped_clip.d_text, name
        if name.startswith("visual_prompts"):
            assert tensor.shape[-1] == shaped_clip.d_vis, name
    before = {k: v.clone() for k, v in m.trained_tensors().items()}
    size = shaped_clip.image_size
    batch = Batch(torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 1]))
    m.train()
    stats = m.forward_backward(batch, torch.optim.SGD(m.trainable_parameters(), lr=0.1))
    assert torch.isfinite(stats).all()
    assert any(not torch.equal(before[k], v) for k, v in m.trained_tensors().items())
    with m.evaluation():
        assert m.model_inference(torch.randn(2, 3, size, size)).shape == (2, len(CLASSES))


@pytest.mark.parametrize("tower", list(UNPROMPTABLE))
def test_towers_it_cannot_prompt_say_so_in_one_line_and_the_rest_runs(tower, tmp_path):
    clip = clip_of(tower, UNPROMPTABLE[tower], tmp_path)
    visual = ["vpt", "ivlp", "maple", "promptsrc", "metaprompt"]
    text = ["coop", "cocoop", "kgcoop", "ivlp", "maple", "promptsrc", "metaprompt"] if tower == "timm-tower-shape" else []
    for method in visual:
        with pytest.raises(MetapromptError) as err:
            build_method(method, clip, CLASSES, make_config(method, SMALL[method]))
        message = str(err.value)
        assert "\n" not in message and (
            "image tower; visual prompts need open_clip's native VisionTransformer" in message
            or "text tower" in message or "pools text" in message), message
    for method in text:
        with pytest.raises(MetapromptError, match="needs text prompts, but model .* (non-native text tower|pools text)"):
            build_method(method, clip, CLASSES, make_config(method, SMALL[method]))
    zero_shot = build_method("zeroshot", clip, CLASSES, make_config("zeroshot", {}))  # no prompt: it runs
    size = clip.image_size
    with zero_shot.evaluation():
        logits = zero_shot.model_inference(torch.randn(2, 3, size, size))
    assert logits.shape == (2, len(CLASSES)) and torch.isfinite(logits).all()
    with torch.no_grad():  # the text features are the tower's own (its pooling), not an argmax over tokens
        tokens = clip.tokenize(["a photo of a ant."])
        own = clip.model.encode_text(tokens)
        assert torch.allclose(clip.encode_text(tokens), own, atol=1e-5)
    if tower == "resnet-shape":  # CoOp prompts only the text: a ResNet image tower is fine
        coop = build_method("coop", clip, CLASSES, make_config("coop", {}))
        coop.train()
        batch = Batch(torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 3]))
        assert torch.isfinite(coop.forward_backward(batch, torch.optim.SGD(coop.trainable_parameters(), lr=0.1))).all()
