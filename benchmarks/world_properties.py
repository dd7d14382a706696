"""Measure the properties the offline world must have, on a world CLIP checkpoint.

Renders a fresh world (a seed the checkpoint never saw) and prints, per domain and on average:
zero-shot accuracy (60-way, template "a photo of a {}.") and a linear probe (multinomial logistic
regression on the frozen, L2-normalised image features, fit on the domain's train split with LBFGS).
The world is done when zero-shot is far above chance (1/60) in every domain and below 90% on
average, and the probe beats zero-shot by >= 10 points on average (docs/world.md).

Hook for the prompt-learning checks (not run here yet): the base-to-new property (CoOp trained on
the base classes must lose new-class accuracy against zero-shot) and the domain-generalisation
property (a prompt tuned on three domains gains less on the fourth than on the three) are measured
with the library's own protocols on a world rendered under ``<root>/world``, e.g.

    metaprompt run base2new --method coop --datasets world --root ROOT --model world-tiny --out OUT
    metaprompt run dg --method coop --dataset world_dg --shots 5 --root ROOT --model world-tiny --out OUT

against ``--method zeroshot``; add a function taking ``(clip, world_dir)`` to ``CHECKS`` that runs them
and returns per-row numbers for ``print_table``.

    python benchmarks/world_properties.py [--checkpoint FILE] [--world DIR] [--seed 1]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metaprompt.world import CLASSNAMES, DOMAINS, WorldCLIP, load_world_clip, render_world

TEMPLATE = "a photo of a {}."
PROBE_L2 = 1e-3
PROBE_ITERATIONS = 200


def load_split(world: Path, domain: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (uint8 ``[N, 3, S, S]``) and labels listed in ``splits/<domain>_<split>.txt``."""
    lines = (world / "splits" / f"{domain}_{split}.txt").read_text().split("\n")
    pairs = [line.rsplit(" ", 1) for line in lines if line]
    images = np.stack([np.asarray(Image.open(world / path).convert("RGB")) for path, _ in pairs])
    return torch.from_numpy(images).permute(0, 3, 1, 2), torch.tensor([int(label) for _, label in pairs])


@torch.no_grad()
def image_features(clip: WorldCLIP, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    mean, std = torch.tensor(clip.mean).view(1, 3, 1, 1), torch.tensor(clip.std).view(1, 3, 1, 1)
    chunks = [clip.model.encode_image((x.float() / 255 - mean) / std, normalize=True) for x in images.split(batch)]
    return torch.cat(chunks)


@torch.no_grad()
def text_classifier(clip: WorldCLIP, classnames: list[str], template: str = TEMPLATE) -> torch.Tensor:
    return clip.model.encode_text(clip.tokenizer([template.format(c) for c in classnames]), normalize=True)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()


def with_bias(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(len(x), 1)], 1)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Weights ``[C, D + 1]`` (last column the bias) of an L2-regularised logistic regression."""
    x = with_bias(train_x)
    w = torch.zeros(num_classes, x.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=PROBE_ITERATIONS, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T, train_y) + PROBE_L2 * w[:, :-1].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def zero_shot_and_probe(clip: WorldCLIP, world: Path) -> dict[str, tuple[float, float]]:
    """Per domain: (zero-shot accuracy, linear-probe accuracy) on the test split, in percent."""
    classifier = text_classifier(clip, list(CLASSNAMES))
    results = {}
    for domain in DOMAINS:
        (train_images, train_y), (test_images, test_y) = (load_split(world, domain, s) for s in ("train", "test"))
        test_x = image_features(clip, test_images)
        w = linear_probe(image_features(clip, train_images), train_y, len(CLASSNAMES))
        results[domain] = (accuracy(test_x @ classifier.T, test_y), accuracy(with_bias(test_x) @ w.T, test_y))
    return results


CHECKS = [zero_shot_and_probe]


def print_table(results: dict[str, tuple[float, float]]) -> None:
    print(f"{'domain':<10} {'zero-shot':>10} {'probe':>8} {'gap':>7}")
    for domain, (zs, lp) in results.items():
        print(f"{domain:<10} {zs:>10.1f} {lp:>8.1f} {lp - zs:>+7.1f}")
    zs, lp = np.mean([r[0] for r in results.values()]), np.mean([r[1] for r in results.values()])
    print(f"{'average':<10} {zs:>10.1f} {lp:>8.1f} {lp - zs:>+7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="world CLIP checkpoint (default: the shipped one)")
    parser.add_argument("--world", default=".world-cache/world-properties", help="where to render the world")
    parser.add_argument("--seed", type=int, default=1, help="seed of the rendered world")
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--test-per-class", type=int, default=50)
    args = parser.parse_args()
    world = render_world(args.world, args.seed, args.train_per_class, args.test_per_class)
    clip = load_world_clip(args.checkpoint)
    for check in CHECKS:
        print_table(check(clip, world))


if __name__ == "__main__":
    main()
