"""MetaPrompt's domain-split (meta) update, as functions of explicit arguments: first-order, alternate,
episodic (method doc section 3b). :class:`metaprompt.methods.metaprompt.MetaPrompt` builds the episodes'
losses and calls :func:`meta_step`.

For each episode k: one inner optimiser step on the meta-train loss, the gradient of the meta-test loss at the
adapted prompts, then the prompts are restored. Finally ``prompts -= meta_step * lr * sum_k g_k`` (plain SGD:
no momentum, no weight decay).

- cross-class (base-to-new): the training classes are shuffled and cut into groups (:func:`class_groups`),
  each group in turn is meta-test;
- cross-domain (domain generalisation): each source domain present in the batch in turn is meta-test
  (:func:`domain_episodes`).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import torch

from ..distributed import global_sum

LossFn = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Episode:
    """The meta-train and meta-test losses of one episode, computed when called (at the current prompts)."""

    train_loss: LossFn
    test_loss: LossFn


@dataclass(frozen=True)
class MetaRule:
    """How the meta update moves the prompts."""

    meta_step: float
    """prompts -= meta_step * lr * sum of the meta-test gradients."""
    released_restore: bool = False
    """Restore as the released code does (``prompts.data = saved``, see :func:`restore`)."""
    zero_grad_to_none: bool = True
    """``optimizer.zero_grad(set_to_none=...)`` after the meta step (False: torch 1.x, zeros)."""


def meta_step(prompts: torch.nn.Parameter, episodes: list[Episode], optimizer: torch.optim.Optimizer, lr: float,
              rule: MetaRule, step: Callable[[torch.Tensor, torch.optim.Optimizer], None],
              gradient: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Inner step (``step(loss, optimizer)``), meta-test gradient (``gradient(loss, prompts)``) and restore for
    each episode, then the summed meta step on ``prompts``; returns the episodes' meta-test gradients."""
    if not episodes:
        return []
    saved = prompts.detach().clone()
    grads = []
    for episode in episodes:
        step(episode.train_loss(), optimizer)
        grads.append(gradient(episode.test_loss(), prompts))
        restore(prompts, saved, rule.released_restore)
    with torch.no_grad():
        for grad in grads:  # one gradient at a time, in the released code's order of operations
            prompts.sub_(lr * grad * rule.meta_step)
    optimizer.zero_grad(set_to_none=rule.zero_grad_to_none)
    return grads


def restore(prompts: torch.nn.Parameter, saved: torch.Tensor, released: bool) -> None:
    """Copy the saved values back; ``released`` does what the released code does, ``prompts.data = saved``:
    the parameter then SHARES storage with the saved copy, so the inner step of every later episode writes
    into the copy as well and is never undone."""
    if released:
        prompts.data = saved
    else:
        with torch.no_grad():
            prompts.copy_(saved)


def class_groups(num_classes: int, n_splits: int, rng: random.Random) -> list[torch.Tensor]:
    """The next cross-class split, as the released code draws it: all class ids shuffled by Python's
    ``random.shuffle`` (``rng``) and cut into ``n_splits`` chunks of ``ceil(n / n_splits)`` (the last ones
    shorter, possibly empty)."""
    ids = list(range(num_classes))
    rng.shuffle(ids)
    size = math.ceil(len(ids) / n_splits)
    return [torch.tensor(ids[k * size:(k + 1) * size], dtype=torch.long) for k in range(n_splits)]


@dataclass(frozen=True)
class Side:
    """One side (meta-train or meta-test) of an episode: its rows of this process's batch, how many rows
    that is here and over all processes (the denominator of its loss), and, for the class split, its classes."""

    rows: torch.Tensor
    count: int
    global_count: int
    classes: torch.Tensor | None = None


def class_episodes(labels: torch.Tensor, groups: list[torch.Tensor]) -> list[tuple[Side, Side]]:
    """(meta-train, meta-test) of each cross-class episode: each group of at least 2 classes in turn is
    meta-test, the others meta-train; an episode with no row on either side over the global batch is left
    out. Every side's counts are read in one transfer (one collective call with several processes)."""
    candidates = []
    for k, test_classes in enumerate(groups):
        if len(test_classes) < 2:
            continue
        train_classes = torch.cat([g for j, g in enumerate(groups) if j != k])
        candidates.append(((torch.isin(labels, train_classes), train_classes),
                           (torch.isin(labels, test_classes), test_classes)))
    return _with_rows(candidates)


def domain_episodes(domains: torch.Tensor, released: bool) -> list[tuple[Side, Side]]:
    """(meta-train, meta-test) of each episode of the cross-domain split, over the global batch; an episode
    with no row on either side is left out.

    Clean: every source domain present in the batch is meta-test once, the other rows meta-train. Released:
    as the released code, N = the number of distinct domains in the batch, episode ``i`` tests on domain id
    ``i`` for ``i`` in 0..N-1 and trains on the other ids below N, so when a domain id is missing from a batch
    some present domains are tested on never, or trained on never."""
    size = int(global_sum(torch.tensor(int(domains.max()) + 1 if domains.numel() else 0)).item())
    present = global_sum(torch.bincount(domains, minlength=size)) if size else torch.zeros(0)
    if released:
        n = int((present > 0).sum())
        pairs = [((domains < n) & (domains != i), domains == i) for i in range(n)]
    else:
        pairs = [(domains != d, domains == d) for d in torch.nonzero(present).flatten().tolist()]
    return _with_rows([((train, None), (test, None)) for train, test in pairs])


def _with_rows(candidates: list) -> list[tuple[Side, Side]]:
    """The candidate episodes ``((train rows, classes), (test rows, classes))`` whose two sides both have rows
    over the global batch, as :class:`Side` pairs: all counts summed here and over processes in one go."""
    if not candidates:
        return []
    local = torch.stack([rows.sum() for pair in candidates for rows, _ in pair])
    counts = torch.stack([local, global_sum(local)]).tolist()
    episodes = []
    for i, ((train_rows, train_classes), (test_rows, test_classes)) in enumerate(candidates):
        (train_here, test_here), (train_all, test_all) = counts[0][2 * i:2 * i + 2], counts[1][2 * i:2 * i + 2]
        if train_all > 0 and test_all > 0:
            episodes.append((Side(train_rows, int(train_here), int(train_all), train_classes),
                             Side(test_rows, int(test_here), int(test_all), test_classes)))
    return episodes


def relabel(labels: torch.Tensor, classes: torch.Tensor, n: int) -> torch.Tensor:
    """Labels renumbered 0.. in the order of ``classes``."""
    lookup = torch.full((n,), -1, dtype=torch.long, device=labels.device)
    lookup[classes] = torch.arange(len(classes), device=labels.device)
    return lookup[labels]
