"""`metaprompt interpret`: the nearest vocabulary words of each learned context token (CoOp's interpret_prompt.py)."""
from __future__ import annotations

import argparse

from .common import HelpFormatter, add_artifact_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "interpret", help="the nearest vocabulary words of each learned context token",
        description="For each learned text context token of an artifact (layer 0, the positions of the prompt's "
                    "words), list the vocabulary tokens nearest to it by Euclidean distance in CLIP's token "
                    "embedding, as CoOp's interpret_prompt.py does.", formatter_class=HelpFormatter)
    add_artifact_args(p)
    p.add_argument("--top-k", type=int, default=5, help="nearest words per context token")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from ..artifact import load_method
    from ..interpret import nearest_words

    method = load_method(args.prompts, device="cpu", pretrained=args.pretrained, model=args.model,
                         precision=args.precision)
    rows = nearest_words(method, args.top_k)
    print(f"{args.prompts}: {len(rows)} learned context token(s); nearest words (Euclidean distance)")
    for position, words in enumerate(rows, start=1):
        print(f"ctx {position}: " + ", ".join(f"{word} ({distance:.4f})" for word, distance in words))
    return 0
