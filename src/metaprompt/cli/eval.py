"""`metaprompt eval`: accuracy of a prompt artifact on a dataset's test images, over any class list."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import MetapromptError
from .common import HelpFormatter, add_artifact_args, add_data_args, add_runtime_args, compute_options, start_runtime, task_spec


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a prompt artifact on a dataset",
        description="Evaluate trained prompts on a dataset's test split over its base, new or all classes "
                    "(any class list works: the prompts do not depend on the training classes).",
        formatter_class=HelpFormatter)
    add_artifact_args(p)
    p.add_argument("--split", choices=("test", "val"), default="test", help="which split to evaluate")
    p.add_argument("--batch-size", type=int, default=100, help="test batch size")
    p.add_argument("--per-class", action="store_true",
                   help="also print each class's accuracy (macro-F1 is always printed), as Dassl's TEST.PER_CLASS_RESULT")
    p.add_argument("--dump-logits", default=None, metavar="FILE.npz",
                   help="save logits [N, C], labels [N] and classnames to this .npz file")
    add_data_args(p)
    add_runtime_args(p)
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    import numpy as np

    from ..artifact import load_method
    from ..evaluation import class_details, evaluate
    from ..tasks import build_task

    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--workers", args.workers, 0)):
        if value is not None and value < low:
            raise MetapromptError(f"{flag} must be {low} or more, got {value}")
    options = compute_options(args)
    task = build_task(task_spec(args))
    items = task.val if args.split == "val" else task.test
    method = load_method(args.prompts, device=start_runtime(args), pretrained=args.pretrained, model=args.model,
                         precision=args.precision)
    method.set_options(options)
    method.set_classes(task.classnames)
    result = evaluate(method, items, args.batch_size, args.workers,
                      progress=not args.no_progress, skip_bad_images=args.skip_bad_images, desc=args.split)
    if args.dump_logits:
        Path(args.dump_logits).parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.dump_logits, logits=result.logits.numpy(), labels=result.labels.numpy(),
                 classnames=np.array(task.classnames))
    skipped = f", {result.skipped_images} unreadable images skipped" if result.skipped_images else ""
    scored = f"target domain {args.target_domain}" if args.target_domain else f"{args.classes} classes"
    print(f"accuracy: {result.accuracy:.2f}% ({len(result.labels)} images, {len(task.classnames)} classes, "
          f"{scored} of {args.dataset} {args.split}{skipped})")
    details = class_details(result, task.classnames)
    if details["macro_f1"] is not None:
        print(f"macro-F1: {details['macro_f1']:.2f}%")
    if args.per_class:
        for name, value in details["per_class_accuracy"].items():
            print(f"  {name}: {'-' if value is None else f'{value:.2f}%'}")
    if task.domains and not args.target_domain:
        print(domain_note(task, items, result, args.split))
    return 0


def domain_note(task, items: list, result, split: str) -> str:
    """What an evaluation of a domain-generalisation dataset without --target-domain scored: every domain's
    images together, and each domain's accuracy (when no image was skipped)."""
    per_domain: dict[str, list[bool]] = {}
    if len(result.labels) == len(items):
        for datum, right in zip(items, (result.logits.argmax(1) == result.labels).tolist()):
            per_domain.setdefault(datum.domain, []).append(right)
    accuracies = "".join(f"; {domain} {100 * sum(v) / len(v):.2f}%" for domain, v in per_domain.items())
    return (f"note: {task.name} is a domain-generalisation dataset and no --target-domain was given: this scored "
            f"the {split} images of every domain ({', '.join(task.domains)}) together{accuracies}. Pass "
            "--target-domain D to score one held-out domain as `metaprompt run dg` does")
