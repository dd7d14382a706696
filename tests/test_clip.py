import pytest
import torch

from metaprompt.clip import exact_context, load_clip
from metaprompt.errors import MetapromptError


def test_unprompted_features_equal_open_clip(tiny_clip):
    images = torch.randn(3, 3, 32, 32)
    tokens = tiny_clip.tokenize(["a photo of a cat.", "a dog", "an extremely long caption about a red star"])
    m = tiny_clip.model
    reference_text = m.encode_text(tokens)
    assert torch.allclose(tiny_clip.encode_text(tokens), reference_text, atol=1e-5)
    assert torch.allclose(tiny_clip.encode_image(images), m.encode_image(images), atol=1e-5)


def test_context_truncation_is_exact(tiny_clip):
    tokens = tiny_clip.tokenize(["a photo of a cat.", "a very much longer caption, with several more words in it"])
    prompts = torch.randn(3, 2, tiny_clip.d_text)
    with exact_context(tiny_clip, truncate=False):
        full = tiny_clip.encode_text(tokens, prompts)
    short = tiny_clip.encode_text(tokens, prompts)
    assert torch.allclose(full, short, atol=1e-5)
    assert not torch.allclose(full, tiny_clip.encode_text(tokens), atol=1e-3)  # prompts do change features


def test_deep_text_prompts_replace_positions_before_each_block(tiny_clip):
    tokens = tiny_clip.tokenize(["x x cat."])
    prompts = torch.randn(2, 2, tiny_clip.d_text)
    m = tiny_clip.model
    x = m.token_embedding(tokens)
    x[:, 1:3] = prompts[0]
    x = x + m.positional_embedding
    for i, block in enumerate(m.transformer.resblocks):
        if i == 1:
            x[:, 1:3] = prompts[1]
        x = block(x, attn_mask=m.attn_mask)
    expected = m.ln_final(x)[0, tokens.argmax(-1)[0]] @ m.text_projection
    assert torch.allclose(tiny_clip.encode_text(tokens, prompts)[0], expected, atol=1e-5)


def test_visual_prompts_are_appended_after_positions_and_replaced(tiny_clip):
    images = torch.randn(2, 3, 32, 32)
    prompts = torch.randn(2, 3, tiny_clip.d_vis)
    v = tiny_clip.model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(2, 1, -1), x], 1) + v.positional_embedding
    x = v.ln_pre(torch.cat([x, prompts[0].expand(2, -1, -1)], 1))
    for i, block in enumerate(v.transformer.resblocks):
        if i == 1:
            x = torch.cat([x[:, :-3], prompts[1].expand(2, -1, -1)], 1)
        x = block(x)
    expected = v.ln_post(x[:, 0]) @ v.proj
    assert torch.allclose(tiny_clip.encode_image(images, prompts), expected, atol=1e-5)


def test_unknown_model_and_missing_checkpoint_are_clear(tiny_model_name):
    with pytest.raises(MetapromptError, match="unknown model 'ViT-Nope'"):
        load_clip("ViT-Nope")
    with pytest.raises(MetapromptError, match="does not exist"):
        load_clip(tiny_model_name, pretrained="/nowhere/model.pt")
    with pytest.raises(MetapromptError, match="unknown pretrained tag"):
        load_clip("ViT-B-16", pretrained="not-a-tag")


def test_resnet_tower_rejects_visual_prompts():
    clip = load_clip("RN50")
    assert clip.visual_prompt_support  # a reason is given
    with pytest.raises(MetapromptError, match="ModifiedResNet image tower"):
        clip.require_visual_prompts("MetaPrompt")
