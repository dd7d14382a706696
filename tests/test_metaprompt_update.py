"""MetaPrompt's update arithmetic, recomputed step by step with plain tensor operations (the parity goldens
in tests/test_parity.py check the same against the released code itself)."""
import math
import random

import pytest
import torch
import torch.nn.functional as F

from metaprompt.methods import Batch, build_method, make_config

CLASSES = ["red star", "blue circle", "green square", "cat", "dog", "big truck"]
LR, MOMENTUM, WD, META_STEP = 0.05, 0.9, 5e-4, 0.2


def sgd(p, grad, buf):
    """torch.optim.SGD (momentum, weight decay, no dampening) written out; returns (new p, new buffer)."""
    d = grad + WD * p
    buf = d if buf is None else MOMENTUM * buf + d
    return p - LR * buf, buf


class Reference:
    """An independent computation of MetaPrompt's logits from raw tensors."""

    def __init__(self, clip, n_ctx):
        self.clip = clip
        self.tokens = clip.tokenize([" ".join(["X"] * n_ctx) + f" {c}." for c in CLASSES])
        with torch.no_grad():
            w0 = clip.encode_text(clip.tokenize([f"a photo of a {c}" for c in CLASSES]))
        self.w0 = F.normalize(w0, dim=-1)
        self.s = clip.model.logit_scale.exp().detach()

    def text(self, T, classes):
        return F.normalize(self.clip.encode_text(self.tokens[classes], T), dim=-1)

    def logits_i(self, images, V, classes=slice(None)):
        return self.s * F.normalize(self.clip.encode_image(images, V), dim=-1) @ self.w0[classes].t()

    def logits_t(self, f0, T, classes=slice(None)):
        cls = torch.arange(len(CLASSES))[classes]
        return self.s * f0 @ self.text(T, cls).t()


def in_domain(ref, images, labels, f0, T, V):
    T, V = T.clone().requires_grad_(), V.clone().requires_grad_()
    li, lt = ref.logits_i(images, V), ref.logits_t(f0, T)
    loss = F.cross_entropy((li + lt) / 2, labels) + F.cross_entropy(li, labels) + F.cross_entropy(lt, labels)
    return torch.autograd.grad(loss, (T, V))


def setup(tiny_clip, **cfg):
    torch.manual_seed(3)
    method = build_method("metaprompt", tiny_clip, CLASSES,
                          make_config("metaprompt", {"text_depth": 2, "vision_depth": 2, **cfg}))
    opt = torch.optim.SGD(method.trainable_parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    images = torch.randn(8, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 0, 3])
    domains = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    return method, opt, Batch(images, labels, domains)


def class_split(n: int, seed: int = 1) -> list[torch.Tensor]:
    """The released code's split: random.shuffle of the class ids, then 2 chunks of ceil(n / 2)."""
    ids = list(range(n))
    random.Random(seed).shuffle(ids)
    size = math.ceil(n / 2)
    return [torch.tensor(ids[:size]), torch.tensor(ids[size:])]


@pytest.mark.parametrize("compat", ["clean", "released"])
def test_cross_class_update_matches_step_by_step(tiny_clip, compat):
    method, opt, batch = setup(tiny_clip, compat=compat)
    T0, V0 = method.text_prompts.detach().clone(), method.visual_prompts.detach().clone()
    ref = Reference(tiny_clip, n_ctx=2)
    with torch.no_grad():
        f0 = F.normalize(tiny_clip.encode_image(batch.images), dim=-1)

    gT, gV = in_domain(ref, batch.images, batch.labels, f0, T0, V0)
    T, bufT = sgd(T0, gT, None)
    V, bufV = sgd(V0, gV, None)

    groups = class_split(len(CLASSES))
    saved, meta = T.clone(), torch.zeros_like(T)
    for k in range(2):
        test_cls, train_cls = groups[k], groups[1 - k]
        lookup = torch.full((len(CLASSES),), -1)
        lookup[train_cls] = torch.arange(len(train_cls))
        tr = torch.isin(batch.labels, train_cls)
        Tk = T.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(ref.logits_t(f0[tr], Tk, train_cls), lookup[batch.labels[tr]]), Tk)
        T, bufT = sgd(T, g, bufT)
        if compat == "released":  # torch 1.x zero_grad: the visual prompt's gradient is zero, not None
            V, bufV = sgd(V, torch.zeros_like(V), bufV)
        lookup[test_cls] = torch.arange(len(test_cls))
        te = torch.isin(batch.labels, test_cls)
        Tk = T.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(ref.logits_t(f0[te], Tk, test_cls), lookup[batch.labels[te]]), Tk)
        meta += g
        if compat == "clean" or k == 0:
            T = saved.clone()  # released: from the second split on, the inner step is not undone
    T = T - META_STEP * LR * meta

    method.forward_backward(batch, opt)
    assert torch.allclose(method.text_prompts.detach(), T, atol=1e-5)
    # visual prompts: the in-domain step only (clean), and the inner steps' weight decay and momentum (released)
    assert torch.allclose(method.visual_prompts.detach(), V, atol=1e-5)


@pytest.mark.parametrize("compat", ["clean", "released"])
def test_cross_domain_update_matches_step_by_step(tiny_clip, compat):
    method, opt, batch = setup(tiny_clip, compat=compat, meta_split="domain")
    T0, V0 = method.text_prompts.detach().clone(), method.visual_prompts.detach().clone()
    ref = Reference(tiny_clip, n_ctx=2)
    with torch.no_grad():
        f0 = F.normalize(tiny_clip.encode_image(batch.images), dim=-1)
    gT, gV = in_domain(ref, batch.images, batch.labels, f0, T0, V0)
    T, bufT = sgd(T0, gT, None)
    V, bufV = sgd(V0, gV, None)

    saved, meta = V.clone(), torch.zeros_like(V)
    for k, d in enumerate([0, 1, 2]):  # every domain of the batch is present: both modes take the same episodes
        te, tr = batch.domains == d, batch.domains != d
        Vk = V.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(ref.logits_i(batch.images[tr], Vk), batch.labels[tr]), Vk)
        V, bufV = sgd(V, g, bufV)
        if compat == "released":
            T, bufT = sgd(T, torch.zeros_like(T), bufT)
        Vk = V.clone().requires_grad_()
        (g,) = torch.autograd.grad(F.cross_entropy(ref.logits_i(batch.images[te], Vk), batch.labels[te]), Vk)
        meta += g
        if compat == "clean" or k == 0:
            V = saved.clone()
    V = V - META_STEP * LR * meta

    method.forward_backward(batch, opt)
    assert torch.allclose(method.visual_prompts.detach(), V, atol=1e-5)
    assert torch.allclose(method.text_prompts.detach(), T, atol=1e-5)


def test_released_domain_episodes_miss_domains_when_an_id_is_absent(tiny_clip):
    """Released: N = 2 distinct domains (0 and 2) in the batch, so the episodes test on ids 0 and 1: id 1 has no
    image and id 0's meta-train rows must have an id below 2 other than 0, of which there are none: no episode.
    Clean: domain 0 and domain 2 are each meta-test once."""
    runs = {}
    for compat in ("clean", "released"):
        method, opt, batch = setup(tiny_clip, compat=compat, meta_split="domain")
        batch.domains = torch.tensor([0, 0, 0, 2, 2, 2, 2, 0])
        _, _, _ = method.in_domain_update(batch, opt)
        runs[compat] = len(method.meta_update(batch, None, opt, LR))
    assert runs == {"clean": 2, "released": 0}


def test_compat_modes_differ(tiny_clip):
    results = []
    for compat in ("clean", "released"):
        method, opt, batch = setup(tiny_clip, compat=compat)
        method.forward_backward(batch, opt)
        results.append(method.text_prompts.detach().clone())
    assert (results[0] - results[1]).abs().max() > 1e-6
