"""``metaprompt world``: render the offline world as a dataset, or pretrain its tiny CLIP."""
from __future__ import annotations

import argparse

from ..world.recipe import DEFAULT_STEPS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "world", help="render the offline world dataset or pretrain its tiny CLIP",
        description="The offline world: 60 '<colour> <shape>' classes drawn in four domains (photo, cartoon, "
                    "sketch, painting), and a tiny CLIP pretrained on it, for running everything without "
                    "downloads. See docs/world.md.")
    sub = parser.add_subparsers(dest="world_command", metavar="WORLD_COMMAND", required=True)

    render = sub.add_parser(
        "render", help="write the world as a dataset on disk",
        description="Render the world into DIR: <domain>/<class>/<split>_<i>.png images, "
                    "splits/<domain>_{train,test}.txt (domain generalisation) and split_zhou_World.json "
                    "(base-to-new, photo domain). The same seed gives the same bytes; a finished render "
                    "with the same settings is left as it is. Pass <data root>/world to use it as the "
                    "'world' dataset.")
    render.add_argument("--out", required=True, metavar="DIR", help="folder to render into (e.g. DATA/world)")
    render.add_argument("--seed", type=int, default=0, metavar="S", help="random seed of the images (default 0)")
    render.add_argument("--train-per-class", type=int, default=32, metavar="N",
                        help="train images per class and domain (default 32)")
    render.add_argument("--test-per-class", type=int, default=32, metavar="N",
                        help="test images per class and domain (default 32)")
    render.add_argument("--val-per-class", type=int, default=4, metavar="N",
                        help="validation images per class in the base-to-new domain (default 4)")
    render.add_argument("--processes", type=int, default=1, metavar="N",
                        help="render in N processes (the same files; default 1)")
    render.set_defaults(func=_render)

    pretrain = sub.add_parser(
        "pretrain", help="pretrain the world's tiny CLIP from scratch",
        description="Contrastively pretrain the world's tiny open_clip CLIP on freshly rendered images and "
                    "deliberately imperfect captions, and write one safetensors file (fp16 weights, config, "
                    "vocabulary, normalisation). Deterministic for a seed on a given machine and thread count; "
                    f"the default {DEFAULT_STEPS} steps take about 12 minutes on one CPU thread "
                    "(OMP_NUM_THREADS=1, the fastest setting on a busy 2-core machine). The package ships the result "
                    "as world-tiny.safetensors.")
    pretrain.add_argument("--out", required=True, metavar="FILE", help="checkpoint to write (.safetensors)")
    pretrain.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    pretrain.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                          help=f"optimisation steps (default {DEFAULT_STEPS})")
    pretrain.set_defaults(func=_pretrain)


def _render(args: argparse.Namespace) -> int:
    from ..world.render import render_world

    out = render_world(args.out, seed=args.seed, train_per_class=args.train_per_class,
                       test_per_class=args.test_per_class, val_per_class=args.val_per_class,
                       processes=args.processes)
    print(f"world rendered in {out}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from ..world.pretraining import pretrain

    out = pretrain(args.out, seed=args.seed, steps=args.steps)
    print(f"world CLIP written to {out}")
    return 0
