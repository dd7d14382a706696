"""Measure the properties the offline world must have, on a world CLIP checkpoint, and check them.

Renders a fresh world (a seed the checkpoint never saw; the demo's world uses seed 0) and prints
Markdown tables, ready to paste into docs/world.md:

1. per domain: zero-shot accuracy (60-way, template "a photo of a {}.") and a linear probe (multinomial
   logistic regression on the frozen, L2-normalised image features, fit on the domain's train split
   with LBFGS);
2. base-to-new on the photo domain (16 shots) with the library's zero-shot CLIP and CoOp, through
   :func:`metaprompt.protocols.run_base2new` and the world presets (``world_<method>_b2n``);
3. domain generalisation (leave one domain out, 2 shots per class per source domain) with the same
   two methods through :func:`metaprompt.protocols.run_dg`, tested on the held-out domain and on the
   source domains' test images.

Then it checks, and exits with status 1 when one fails:
- zero-shot is far above chance (>= 10 x 1/60) in every domain and below 90% on average;
- the probe beats zero-shot by >= 10 points on average (room for prompt learning);
- CoOp's new-class accuracy is below zero-shot's (base-to-new failure mode);
- CoOp's gain over zero-shot on its source domains exceeds its gain on the held-out domain
  (domain-generalisation failure mode).

    python benchmarks/world_properties.py [--checkpoint FILE] [--root DIR] [--seed 1] [--seeds 1 2 3]
        [--methods zeroshot coop ivlp metaprompt]

The prompt-learning runs resume and skip finished runs under ``<root>/runs`` (delete it after changing
a preset). With a checkpoint other than the shipped one, the runs use it through ``--checkpoint``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metaprompt.cli.demo import DEMO_METHODS
from metaprompt.config import resolve
from metaprompt.protocols import Runtime, run_base2new, run_dg
from metaprompt.results import build_report, render
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


def probe_table(results: dict[str, tuple[float, float]]) -> str:
    lines = ["| domain | zero-shot | linear probe | gap |", "|---|---|---|---|"]
    rows = [*results.items(), ("average", tuple(np.mean([r[k] for r in results.values()]) for k in (0, 1)))]
    lines += [f"| {domain} | {zs:.1f} | {lp:.1f} | {lp - zs:+.1f} |" for domain, (zs, lp) in rows]
    return "\n".join(lines)


def prompt_learning(root: Path, methods: list[str], seeds: list[int], checkpoint: str | None) -> list[dict]:
    """Base-to-new and domain-generalisation results of ``methods`` with the world presets."""
    runtime = Runtime(log=lambda line: print(line, file=sys.stderr))
    results = []
    for method in methods:
        sets = [] if checkpoint is None else [f"pretrained={checkpoint}"]
        results += run_base2new(resolve(preset=f"world_{method}_b2n", sets=sets), ["world"], seeds, root,
                                root / "runs", runtime)
        results += run_dg(resolve(preset=f"world_{method}_dg", sets=sets), "world_dg", seeds, root, root / "runs",
                          runtime, source_accuracy=True)
    return results


def mean_metric(results: list[dict], method: str, protocol: str, metric: str) -> float:
    """Mean over seeds (and over target domains in domain generalisation)."""
    return float(np.mean([r["metrics"][metric] for r in results if r["method"] == method and r["protocol"] == protocol]))


def checks(probe: dict[str, tuple[float, float]], results: list[dict]) -> list[tuple[str, bool]]:
    zero_shot = [zs for zs, _ in probe.values()]
    probe_gain = np.mean([lp - zs for zs, lp in probe.values()])
    chance = 100.0 / len(CLASSNAMES)
    coop_new, zs_new = (mean_metric(results, m, "base2new", "new") for m in ("coop", "zeroshot"))
    gains = {metric: mean_metric(results, "coop", "dg", metric) - mean_metric(results, "zeroshot", "dg", metric)
             for metric in ("source", "accuracy")}
    return [
        (f"zero-shot far above chance in every domain: min {min(zero_shot):.1f} >= {10 * chance:.1f}",
         min(zero_shot) >= 10 * chance),
        (f"zero-shot below 90% on average: {np.mean(zero_shot):.1f}", np.mean(zero_shot) < 90),
        (f"linear probe beats zero-shot by >= 10 points on average: {probe_gain:+.1f}", probe_gain >= 10),
        (f"CoOp's new-class accuracy below zero-shot's: {coop_new:.1f} < {zs_new:.1f}", coop_new < zs_new),
        (f"CoOp gains more on its source domains than on the held-out one: {gains['source']:+.1f} > "
         f"{gains['accuracy']:+.1f}", gains["source"] > gains["accuracy"]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", help="world CLIP checkpoint (default: the shipped one)")
    parser.add_argument("--root", default=".world-cache/world-properties",
                        help="data root: the world is rendered in ROOT/world, the runs go to ROOT/runs")
    parser.add_argument("--seed", type=int, default=1, help="seed of the rendered world")
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--test-per-class", type=int, default=50)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3],
                        help="seeds of the prompt-learning runs (CoOp's new-class drop varies a lot over seeds)")
    parser.add_argument("--methods", nargs="+", default=["zeroshot", "coop"], choices=DEMO_METHODS,
                        help="methods of the prompt-learning tables (zeroshot and coop are always run)")
    args = parser.parse_args()
    root = Path(args.root)
    world = render_world(root / "world", args.seed, args.train_per_class, args.test_per_class)
    probe = zero_shot_and_probe(load_world_clip(args.checkpoint), world)
    methods = ["zeroshot", "coop", *(m for m in args.methods if m not in ("zeroshot", "coop"))]
    results = prompt_learning(root, methods, args.seeds, args.checkpoint)
    print(f"world rendered with seed {args.seed}, {args.train_per_class} train / {args.test_per_class} test images "
          f"per class and domain; prompt-learning seeds {' '.join(map(str, args.seeds))}\n")
    print("### Zero-shot and linear probe (60-way)\n")
    print(probe_table(probe) + "\n")
    print(render(build_report(results).tables, "md"))
    failed = 0
    for text, ok in checks(probe, results):
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
