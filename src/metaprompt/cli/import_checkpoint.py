"""`metaprompt import`: a released trainer's Dassl checkpoint (CoOp, CoCoOp, KgCoOp, VPT, IVLP, MaPLe, PromptSRC,
MetaPrompt) as a prompt artifact that eval, predict, export and interpret take."""
from __future__ import annotations

import argparse
import json

from .common import (CLASS_SUBSETS, ROOT_HELP, HelpFormatter, add_config_args, add_device_arg, class_list,
                     device_of)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="turn a released trainer's Dassl checkpoint into a prompt artifact",
        description="Read the checkpoint a released trainer's save_model wrote (PATH: the model.pth.tar-N file, or "
                    "the output folder holding <learner>/model.pth.tar-N or model-best.pth.tar, which is taken as "
                    "Dassl's load_model takes it) without running any code the file names, take the trained "
                    "tensors, and write them with the method's config as an artifact. The prompt sizes and depths "
                    "come from the checkpoint; what its shapes cannot say (CoOp's class token position, the "
                    "model) comes from the preset, --set and --model / --pretrained. docs/export.md has examples.",
        formatter_class=HelpFormatter)
    p.add_argument("path", metavar="PATH", help="model.pth.tar-N / model-best.pth.tar, or the trainer's output folder")
    p.add_argument("--epoch", type=int, default=None,
                   help="in an output folder, take model.pth.tar-EPOCH (as the released scripts' --load-epoch); "
                        "default: model-best.pth.tar, else the only model.pth.tar-N")
    add_config_args(p)
    p.add_argument("--dataset", default=None,
                   help="the dataset the prompts were trained on: its class names (with --root and --classes) and "
                        "its hand-crafted templates, where the method uses them")
    p.add_argument("--root", default=None, help=ROOT_HELP)
    p.add_argument("--classes", choices=CLASS_SUBSETS, default="base",
                   help="the classes the released trainer trained on: base for base-to-new (its SUBSAMPLE_CLASSES "
                        "base), all for few-shot, cross-dataset and DG")
    p.add_argument("--classnames", default=None,
                   help="comma-separated class names in label order, instead of reading them from --dataset/--root")
    p.add_argument("--out", required=True, help="the artifact to write (e.g. prompts.safetensors)")
    add_device_arg(p)
    p.set_defaults(func=command, root_optional=True)


def command(args: argparse.Namespace) -> int:
    from ..artifact import save_artifact
    from ..config import resolve
    from ..dassl_checkpoint import find_checkpoint, load_released, origin, read_checkpoint, released_tensors

    base = resolve(args.method, args.preset, args.sets, args.model, args.pretrained)
    name = _released_method(base.method)
    classnames = _classnames(args)
    path = find_checkpoint(args.path, name, args.epoch)
    checkpoint = read_checkpoint(path)
    tensors = released_tensors(checkpoint, name)
    fixed = _fixed_by_shapes(base, args.sets, tensors, path)
    cfg = resolve(name, args.preset, [*args.sets, *fixed], args.model, args.pretrained)
    method = _built(cfg, args, classnames)
    load_released(method, checkpoint, tensors)
    save_artifact(args.out, method, extra={"imported_from": json.dumps(origin(checkpoint))})
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in sorted(tensors.items()))
    print(f"imported {name} from {path} (epoch {checkpoint.epoch}, val_result {checkpoint.val_result}): "
          f"{shapes}; {', '.join(fixed)} from its shapes")
    data = f"--dataset {args.dataset} --root {args.root}" if args.dataset and args.root else "--dataset NAME --root DATA"
    print(f"wrote {args.out}; evaluate it with: metaprompt eval --prompts {args.out} {data} --classes new")
    return 0


def _released_method(method: str) -> str:
    from ..dassl_checkpoint import LEARNER_FOLDERS
    from ..errors import MetapromptError

    if method not in LEARNER_FOLDERS:
        raise MetapromptError(f"--method {method}: expected the method whose released trainer wrote the "
                              f"checkpoint, one of {', '.join(LEARNER_FOLDERS)}")
    return method


def _fixed_by_shapes(base, sets: list[str], tensors: dict, path) -> list[str]:
    """``key=value`` of every option the tensors' shapes fix; a ``--set`` that says otherwise is refused."""
    from ..config import parse_set
    from ..dassl_checkpoint import shape_options
    from ..errors import MetapromptError

    given = dict(parse_set(base, s) for s in sets)
    fixed = [f"{k}={json.dumps(v)}" for k, v in shape_options(base.method, tensors).items()]
    for assignment in fixed:
        key, value = parse_set(base, assignment)
        if key in given and given[key] != value:
            raise MetapromptError(f"--set {key.rsplit('.', 1)[-1]}={given[key]} disagrees with the checkpoint "
                                  f"({path}), whose tensors have {assignment}")
    return fixed


def _built(cfg, args: argparse.Namespace, classnames: list[str]):
    """The method on the chosen CLIP, for the class names."""
    from ..clip import load_clip
    from ..data.base import template_key
    from ..methods import build_method

    clip = load_clip(cfg.model, cfg.pretrained, device=device_of(args), precision=cfg.train.precision)
    return build_method(cfg.method, clip, classnames, cfg.method_config,
                        dataset=template_key(args.dataset) if args.dataset else "default")


def _classnames(args: argparse.Namespace) -> list[str]:
    """``--classnames``, or the class names of ``--dataset`` under ``--root`` (its ``--classes`` subset)."""
    from ..errors import MetapromptError
    from ..tasks import TaskSpec, build_task

    if args.classnames is not None:
        return class_list(args.classnames)
    if args.dataset is None or args.root is None:
        raise MetapromptError("the class names are needed: give --dataset NAME --root DATA (and --classes, default "
                              "base), or --classnames a,b,c in label order")
    return build_task(TaskSpec(dataset=args.dataset, root=args.root, classes=args.classes)).classnames
