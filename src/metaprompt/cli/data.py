"""``metaprompt data``: check the datasets under a data root, or prepare CoOp's layout from torchvision's
downloads."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..data.check import check_datasets, failed, format_check
from ..data.prepare import DEFAULT_SEED, PREPARABLE, prepare_dataset
from ..data.registry import known_datasets
from ..errors import MetapromptError

ROOT_HELP = "the data root: the folder holding one folder per dataset (CoOp's $DATA)"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="check or prepare datasets on disk",
        description="Check which datasets under a data root are found, missing or broken, or build CoOp's "
                    "folder layout for a dataset from the files torchvision downloads.")
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    check = sub.add_parser(
        "check", help="report each dataset under a data root as found, missing or broken",
        description="Read each dataset under the data root and report it as found (with its classes and split "
                    "sizes, a few class names, and its smallest class per split against the shots its protocol "
                    "draws), missing (no folder) or broken (naming the file or folder that is missing or "
                    "malformed and what was expected). Exits non-zero when a requested dataset is missing or "
                    "broken; with no --dataset, when any dataset present is broken.")
    check.add_argument("--root", type=Path, default=None,
                       help=ROOT_HELP + "; required unless every --dataset is a descriptor file")
    check.add_argument("--dataset", dest="datasets", metavar="NAME", nargs="+", action="extend",
                       help="datasets to check, by name or descriptor file (repeatable; default: all known: "
                            f"{', '.join(known_datasets())})")
    check.add_argument("--shots", type=int, default=None,
                       help="training images per class to compare the smallest class with (default: the protocol's, "
                            "16 for base-to-new, 5 per source domain for domain generalisation)")
    check.set_defaults(func=run_check)

    prepare = sub.add_parser(
        "prepare", help="build CoOp's layout for a dataset from torchvision's files",
        description="Build CoOp's folder layout for NAME under the data root from the files torchvision's "
                    "dataset class downloads (linked, not copied, where the file system allows). When CoOp's "
                    "split_zhou_*.json file is absent, one is made with the recipe CoOp's reader uses: the official "
                    "test set kept and the official train(+val) split 80/20 per class where there is one "
                    "(OxfordPets, StanfordCars, SUN397 from its Training_01 / Testing_01 partition), else per class "
                    "50% train, 20% val, 30% test; the file and the output name the recipe. Flowers102 and "
                    "StanfordCars need scipy: pip install 'metaprompt-vl[prepare]'.")
    prepare.add_argument("name", metavar="NAME", choices=PREPARABLE,
                         help="the dataset to prepare: %(choices)s")
    prepare.add_argument("--root", type=Path, required=True, help=ROOT_HELP)
    prepare.add_argument("--download", action="store_true",
                         help="fetch the files with torchvision first (default: use files already under --root)")
    prepare.add_argument("--seed", type=int, default=DEFAULT_SEED,
                         help="seed of the split made when no split file exists (default: %(default)s)")
    prepare.set_defaults(func=run_prepare)


def run_check(args: argparse.Namespace) -> int:
    if args.shots is not None and args.shots < 1:
        raise MetapromptError(f"--shots {args.shots}: expected the shots per class to check against, 1 or more")
    results = check_datasets(args.root, args.datasets, args.shots)
    for result in results:
        print(format_check(result))
    return 1 if failed(results, requested=bool(args.datasets)) else 0


def run_prepare(args: argparse.Namespace) -> int:
    prepare_dataset(args.name, args.root, download=args.download, seed=args.seed)
    return 0
