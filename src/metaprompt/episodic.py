"""MetaPrompt's domain-split (meta) update: first-order, alternate, episodic (method doc section 3b).

For each split k: one inner optimiser step on the meta-train part, the gradient of the meta-test loss
at the adapted prompts, then the prompts are restored. Finally
``prompts -= meta_step * lr * sum_k g_k`` (plain SGD: no momentum, no weight decay).

- cross-class (base-to-new): text prompts; the training classes are shuffled and cut into groups, each
  group in turn is meta-test (only logits_t is needed: no prompted image pass);
- cross-domain (domain generalisation): visual prompts; each source domain present in the batch in turn
  is meta-test (only logits_i is needed: no text-encoder pass).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch

from .distributed import global_sum

if TYPE_CHECKING:
    from .methods.base import Batch
    from .methods.metaprompt import MetaPrompt

LossFn = Callable[[], torch.Tensor]
Episode = tuple[LossFn, LossFn]


def cross_class_update(method: "MetaPrompt", batch: "Batch", frozen: torch.Tensor,
                       optimizer: torch.optim.Optimizer, lr: float) -> list[torch.Tensor]:
    """Meta update of the text prompts over class groups; returns the meta-test gradient of each episode run."""
    n = method.num_classes
    groups = [g.to(batch.labels.device) for g in class_groups(method)]
    episodes = []
    for k, test_classes in enumerate(groups):
        train_classes = torch.cat([g for j, g in enumerate(groups) if j != k])
        if len(test_classes) < 2:
            continue
        train_rows, test_rows = _rows_of(batch.labels, train_classes), _rows_of(batch.labels, test_classes)
        if not (_any_global(train_rows) and _any_global(test_rows)):
            continue
        episodes.append((_class_loss(method, batch, frozen, train_rows, train_classes, n),
                         _class_loss(method, batch, frozen, test_rows, test_classes, n)))
    return run_episodes(method, method.text_prompts, episodes, optimizer, lr)


def class_groups(method: "MetaPrompt") -> list[torch.Tensor]:
    """The next cross-class split, as the released code draws it: all class ids shuffled by Python's
    ``random.shuffle`` (the method's split generator) and cut into ``n_class_splits`` chunks of
    ``ceil(n / N)`` (the last ones shorter, possibly empty)."""
    ids = list(range(method.num_classes))
    method.split_random.shuffle(ids)
    size = math.ceil(len(ids) / method.cfg.n_class_splits)
    return [torch.tensor(ids[k * size:(k + 1) * size], dtype=torch.long) for k in range(method.cfg.n_class_splits)]


def cross_domain_update(method: "MetaPrompt", batch: "Batch", optimizer: torch.optim.Optimizer,
                        lr: float) -> list[torch.Tensor]:
    """Meta update of the visual prompts over source domains; returns the meta-test gradient of each episode
    run."""
    domains = batch.domains
    episodes = []
    for test_rows, train_rows in domain_episodes(domains, released=method.cfg.compat == "released"):
        if not (_any_global(train_rows) and _any_global(test_rows)):
            continue
        episodes.append((_domain_loss(method, batch, train_rows), _domain_loss(method, batch, test_rows)))
    return run_episodes(method, method.visual_prompts, episodes, optimizer, lr)


def domain_episodes(domains: torch.Tensor, released: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(meta-test rows, meta-train rows) of each episode of the cross-domain split, over the global batch.

    Clean: every source domain present in the batch is meta-test once, the other rows meta-train. Released:
    as the released code, N = the number of distinct domains in the batch, episode ``i`` tests on domain id
    ``i`` for ``i`` in 0..N-1 and trains on the other ids below N, so when a domain id is missing from a batch
    some present domains are tested on never, or trained on never."""
    size = int(global_sum(torch.tensor(int(domains.max()) + 1 if domains.numel() else 0)).item())
    present = global_sum(torch.bincount(domains, minlength=size)) if size else torch.zeros(0)
    if not released:
        return [(domains == d, domains != d) for d in torch.nonzero(present).flatten().tolist()]
    n = int((present > 0).sum())
    return [(domains == i, (domains < n) & (domains != i)) for i in range(n)]


def run_episodes(method: "MetaPrompt", prompts: torch.nn.Parameter, episodes: list[Episode],
                 optimizer: torch.optim.Optimizer, lr: float) -> list[torch.Tensor]:
    """Inner step, meta-test gradient and restore for each episode, then the summed meta step; returns the
    episodes' meta-test gradients."""
    if not episodes:
        return []
    saved = prompts.detach().clone()
    grads = []
    for train_loss, test_loss in episodes:
        method.step(train_loss(), optimizer)
        grads.append(method.gradient(test_loss(), prompts))
        restore(prompts, saved, method.cfg.compat)
    with torch.no_grad():
        for grad in grads:  # one gradient at a time, in the released code's order of operations
            prompts.sub_(lr * grad * method.cfg.meta_step)
    optimizer.zero_grad(set_to_none=method.zero_grad_to_none)
    return grads


def restore(prompts: torch.nn.Parameter, saved: torch.Tensor, mode: str) -> None:
    """``clean`` copies the saved values back. ``released`` does what the released code does,
    ``prompts.data = saved``: the parameter then SHARES storage with the saved copy, so the inner step of
    every later split writes into the copy as well and is never undone."""
    if mode == "released":
        prompts.data = saved
    else:
        with torch.no_grad():
            prompts.copy_(saved)


def relabel(labels: torch.Tensor, classes: torch.Tensor, n: int) -> torch.Tensor:
    """Labels renumbered 0.. in the order of ``classes``."""
    lookup = torch.full((n,), -1, dtype=torch.long, device=labels.device)
    lookup[classes] = torch.arange(len(classes), device=labels.device)
    return lookup[labels]


def _rows_of(labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return torch.isin(labels, classes)


def _any_global(rows: torch.Tensor) -> bool:
    return bool(global_sum(rows.sum()).item() > 0)


def _class_loss(method, batch, frozen, rows, classes, n) -> LossFn:
    """CE of logits_t on the rows' images over ``classes`` (relabelled)."""
    def loss() -> torch.Tensor:
        if method.options.reuse_frozen_features:
            logits = method.text_logits(frozen[rows], classes)
        else:
            logits = method.reference_pass(batch.images)[1][rows][:, classes]
        return method.cross_entropy(logits, relabel(batch.labels[rows], classes, n))
    return loss


def _domain_loss(method, batch, rows) -> LossFn:
    """CE of logits_i on the rows' images over all classes."""
    def loss() -> torch.Tensor:
        if not rows.any():  # none of this process's images: a zero share that stays on the prompts' graph
            logits = (method.visual_prompts * 0).sum() + batch.images.new_zeros(0, method.num_classes)
        elif method.options.reuse_frozen_features:
            logits = method.image_logits(batch.images[rows])
        else:
            logits = method.reference_pass(batch.images)[0][rows]
        return method.cross_entropy(logits, batch.labels[rows])
    return loss
