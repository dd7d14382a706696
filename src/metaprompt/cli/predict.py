"""`metaprompt predict`: the top classes of single images under trained prompts."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MetapromptError
from .common import HelpFormatter, add_artifact_args, add_device_arg, class_list, device_of


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="classify images with a prompt artifact",
        description="Print the top-k classes (with probabilities) of each image under trained prompts; the "
                    "class list defaults to the artifact's training classes and can be any list.",
        formatter_class=HelpFormatter)
    add_artifact_args(p)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--classes", default=None, help="comma-separated class names (default: the artifact's)")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to print per image")
    add_device_arg(p)
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    import torch

    from ..artifact import load_method
    from ..data.dataset import load_image
    from ..data.transforms import test_transform

    if args.top_k < 1:
        raise MetapromptError(f"--top-k must be at least 1, got {args.top_k}")
    missing = [path for path in args.images if not Path(path).is_file()]
    if missing:
        raise MetapromptError(f"no such image file: {', '.join(missing)}")
    classes = class_list(args.classes)
    method = load_method(args.prompts, device=device_of(args), pretrained=args.pretrained, model=args.model,
                         precision=args.precision)
    if classes is not None:
        method.set_classes(classes)
    clip = method.clip
    transform = test_transform(clip.image_size, clip.mean, clip.std)
    images = torch.stack([transform(load_image(path)) for path in args.images]).to(method.device)
    with method.evaluation():
        probs = method.model_inference(images).softmax(-1).cpu()
    k = min(args.top_k, method.num_classes)
    for path, row in zip(args.images, probs):
        top = row.topk(k)
        ranked = ", ".join(f"{method.classnames[i]} {p * 100:.1f}%" for p, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"{path}: {ranked}")
    return 0
