"""CLIP's linear probe, as CoOp's lpclip runs it (KaiyangZhou/CoOp lpclip/feat_extractor.py, linear_probe.py):
an L2-regularised logistic regression (scikit-learn, lbfgs, at most 1000 iterations) on CLIP's own image
features, unnormalised, of the few-shot training images under the test transform. Its regularisation strength C
is chosen on the few-shot validation images: the best of 1e6, 1e4, ..., 1e-6, then ``search_steps`` halvings
of a log-scale interval around it, each keeping the better end (ties to the lower end), as the release does.

The weights and bias are the method's trained tensors (its artifact); logits are ``features @ weight.T + bias``,
for the classes it was fitted on only."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import MetapromptError
from ..validation import at_least, validate
from .base import TRAINING_LOOP_OPTIONS, PromptMethod

INITIAL_SEARCH = (1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6)


@dataclass
class LinearProbeConfig:
    search_steps: int = 8
    """Halvings of the C interval after the initial search (lpclip's --num_step)."""
    max_iter: int = 1000

    def __post_init__(self) -> None:
        validate(self, {"search_steps": at_least(0), "max_iter": at_least(1)}, scope="method.")


@dataclass(frozen=True)
class ProbeFit:
    """The chosen C, its validation accuracy (%), and every C tried with its validation accuracy."""

    c: float
    val_accuracy: float
    tried: tuple[tuple[float, float], ...]


def fit_logistic(features: np.ndarray, labels: np.ndarray, c: float, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():  # 1 or 2 shots per class is few-shot, not a regression target
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        return LogisticRegression(solver="lbfgs", max_iter=max_iter, C=c).fit(features, labels)  # L2 by default


def search_c(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], steps: int = 8,
             max_iter: int = 1000):
    """(the classifier of the chosen C, :class:`ProbeFit`), by lpclip's search (see the module docstring)."""
    tried: list[tuple[float, float]] = []

    def accuracy(c: float):
        clf = fit_logistic(*train, c, max_iter)
        acc = float(np.mean(clf.predict(val[0]) == val[1]))
        tried.append((c, acc * 100))
        return clf, acc

    initial = [accuracy(c) for c in INITIAL_SEARCH]
    first_best = int(np.argmax([acc for _, acc in initial]))
    peak = INITIAL_SEARCH[first_best]
    left, right = 0.1 * peak, 10.0 * peak
    best = (initial[first_best][0], peak, initial[first_best][1])  # with no halving asked for
    for _ in range(steps):
        (clf_left, acc_left), (clf_right, acc_right) = accuracy(left), accuracy(right)
        middle = 10 ** (0.5 * (math.log10(right) + math.log10(left)))
        if acc_left < acc_right:
            best, left = (clf_right, right, acc_right), middle
        else:
            best, right = (clf_left, left, acc_left), middle
    clf, c, acc = best
    return clf, ProbeFit(c, acc * 100, tuple(tried))


class LinearProbe(PromptMethod):
    name = "linear_probe"
    config_class = LinearProbeConfig
    closed_form = True
    unused_train_options = TRAINING_LOOP_OPTIONS
    image_independent_text = False  # it has no text side to encode (and cache) per evaluation

    def build(self) -> None:
        d = self.clip.embed_dim
        self.weight = nn.Parameter(torch.zeros(self.num_classes, d))
        self.bias = nn.Parameter(torch.zeros(self.num_classes))
        self.fitted_on = list(self.classnames)

    def on_classes_changed(self) -> None:
        if self.classnames != self.fitted_on:
            raise MetapromptError(f"a linear probe is fitted to its {len(self.fitted_on)} training classes and "
                                  f"cannot serve other classes ({len(self.classnames)} given); it has no text side "
                                  "to encode new class names with")

    def encode_classes(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        raise MetapromptError("a linear probe has no class text features")

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP's own image features, unnormalised (as lpclip's feat_extractor takes them)."""
        with self.clip.autocast():
            return self.clip.encode_image(images).to(self.clip.feature_dtype)

    def model_inference(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        f = self.encode_images(images)
        return f.float() @ self.weight.t() + self.bias

    def forward_backward(self, batch, optimizer):
        raise MetapromptError("a linear probe is fitted in closed form (scikit-learn), not by gradient steps")

    def fit(self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor]) -> ProbeFit:
        """Fit on (features, labels) of the training images, C chosen on the validation images'."""
        as_numpy = [(x.float().cpu().numpy().astype(np.float64), y.cpu().numpy()) for x, y in (train, val)]
        present = np.unique(as_numpy[0][1])
        if len(present) != self.num_classes:
            raise MetapromptError(f"the linear probe needs training images of every class: {len(present)} of "
                                  f"{self.num_classes} classes have some")
        clf, fit = search_c(*as_numpy, steps=self.cfg.search_steps, max_iter=self.cfg.max_iter)
        coef, intercept = torch.from_numpy(clf.coef_).float(), torch.from_numpy(clf.intercept_).float()
        if coef.shape[0] == 1:  # two classes: scikit-learn keeps one row, for class 1 (class 0 at logit 0)
            coef, intercept = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(intercept), intercept])
        with torch.no_grad():
            self.weight.copy_(coef)
            self.bias.copy_(intercept)
        return fit
