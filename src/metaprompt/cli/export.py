"""`metaprompt export`: trained prompts as a classifier head that plain open_clip uses."""
from __future__ import annotations

import argparse

from .common import HelpFormatter, add_artifact_args, add_device_arg, class_list, device_of


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write trained prompts as a classifier head for plain open_clip",
        description="For zero-shot CLIP, CoOp and KgCoOp (class features that depend on no image, CLIP's own image "
                    "features): write the normalised class text features and the logit scale to a safetensors file. "
                    "logits = logit_scale * normalize(open_clip model.encode_image(x)) @ classifier.T, with no "
                    "prompts and no metaprompt (docs/export.md). Methods that prompt the image encoder, or condition "
                    "the text on the image (CoCoOp), cannot be exported this way and say why.",
        formatter_class=HelpFormatter)
    add_artifact_args(p)
    p.add_argument("--classes", default=None,
                   help="comma-separated class names (default: the artifact's training classes)")
    p.add_argument("--out", required=True, help="the head file to write (e.g. head.safetensors)")
    add_device_arg(p)
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from ..artifact import load_method, read_artifact
    from ..errors import MetapromptError
    from ..export import export_head, why_not_exportable
    from ..methods import method_class

    art = read_artifact(args.prompts)
    problem = why_not_exportable(method_class(art.method))
    if problem:  # said before any model is loaded
        raise MetapromptError(f"cannot export {args.prompts} as a classifier head: {problem}")
    classes = class_list(args.classes)
    method = load_method(args.prompts, device=device_of(args), pretrained=args.pretrained, model=args.model,
                         precision=args.precision)
    if classes is not None:
        method.set_classes(classes)
    path = export_head(method, args.out)
    print(f"wrote {path}: {method.num_classes} classes x {method.clip.embed_dim} features ({art.method}); "
          "see docs/export.md to use it with open_clip alone")
    return 0
