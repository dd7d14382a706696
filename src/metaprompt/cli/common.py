"""Arguments and steps shared by several subcommands. Nothing here imports torch: the commands import what
they run inside their ``run`` functions, so that building the parser (``--help``, ``metaprompt report``)
stays fast."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from .. import runlog
from ..config import DEFAULT_PRESETS, RunConfig, preset_names, resolve
from ..errors import MetapromptError
from ..tasks import TaskSpec

if TYPE_CHECKING:
    from ..methods import ComputeOptions

CLASS_SUBSETS = ("base", "new", "all")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, once: options whose help already says its default (or that have
    none to say: flags, None, empty lists) are left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def add_data_args(p: argparse.ArgumentParser, classes_default: str = "all") -> None:
    p.add_argument("--dataset", required=True,
                   help="dataset name (eurosat, oxford_pets, pacs, world, ...; see `metaprompt data check`), "
                        "a dataset descriptor file (.yaml: your own data, see docs/extending.md), "
                        "or `imagefolder` to read --root as ROOT/<split>/<class>/*.png|jpg")
    p.add_argument("--root", default=None, help=ROOT_HELP)
    p.add_argument("--classes", choices=CLASS_SUBSETS, default=classes_default,
                   help=f"class subset: base = first half of the sorted labels, new = the rest (default: {classes_default})")
    p.add_argument("--target-domain", default=None,
                   help="domain generalisation: leave this domain out (train on the others, test on it)")


ROOT_HELP = ("data root: the folder holding the dataset folders ($DATA); required unless every dataset named is a "
             "descriptor file, whose own root is used")
DATASET_ARGS = ("dataset", "datasets", "source", "targets")
"""The options that name datasets, where a descriptor file may stand for one (a parser whose options differ, as
run dg's, whose --targets are domains, sets its own ``dataset_args``)."""


def resolve_datasets(args: argparse.Namespace) -> None:
    """Register every dataset descriptor file the command names (``--dataset mydata.yaml``) and put its dataset's
    name in its place, so that folders, records and tables use the name; a left-out ``--root`` is taken from the
    descriptor (whose reader reads its own root). A command that needs a data root and named no descriptor must
    be given ``--root``."""
    from ..data.descriptor import DESCRIPTORS, is_descriptor

    runlog.dataset_files.clear()
    named, others = [], []
    for attr in getattr(args, "dataset_args", DATASET_ARGS):
        value = getattr(args, attr, None)
        values = value if isinstance(value, list) else [] if value in (None, "") else [value]
        names = [_descriptor_name(v) if is_descriptor(v) else v for v in values]
        named += [n for n, v in zip(names, values) if is_descriptor(v)]
        others += [v for v in values if not is_descriptor(v)]
        if values:
            setattr(args, attr, names if isinstance(value, list) else names[0])
    if getattr(args, "root", "") is None:
        if named and not others:
            args.root = str(DESCRIPTORS[named[0]].root.parent)  # each descriptor's reader reads its own root
        elif not getattr(args, "root_optional", False):
            raise MetapromptError("--root is required: the data root, the folder holding the dataset folders "
                                  "(it may be left out when every dataset is named by a descriptor file)")


def _descriptor_name(path: str) -> str:
    """Register the descriptor at ``path``, recorded for the run's provenance; returns its dataset's name."""
    from ..data.descriptor import DESCRIPTORS, register_descriptor

    name = register_descriptor(path)
    descriptor, earlier = DESCRIPTORS[name], runlog.dataset_files.get(name)
    if earlier and earlier["descriptor"] != str(descriptor.path):
        raise MetapromptError(f"two descriptor files name the dataset {name!r} ({earlier['descriptor']}, "
                              f"{descriptor.path}); expected one name per dataset")
    runlog.dataset_files[name] = {"descriptor": str(descriptor.path), "sha256": descriptor.sha256}
    return name


def add_config_args(p: argparse.ArgumentParser, preset_default: str = "the method's base-to-new preset") -> None:
    """Method, preset, ``--set`` overrides and model: what :func:`run_config` resolves."""
    p.add_argument("--method", default=None, help=f"method: {', '.join(DEFAULT_PRESETS)} (default: the preset's)")
    p.add_argument("--preset", default=None,
                   help=f"published configuration to start from: {', '.join(preset_names())}, or a YAML file "
                        f"(default: {preset_default})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override an option, e.g. --set lr=0.002 --set n_ctx=4 (train.KEY / method.KEY disambiguate)")
    p.add_argument("--model", default=None,
                   help="open_clip model name (ViT-B-16), hf-hub:ID, a model config JSON, or world-tiny (default: the preset's)")
    p.add_argument("--pretrained", default=None,
                   help="open_clip pretrained tag (openai), a local checkpoint file, or none (default: the preset's)")


def run_config(args: argparse.Namespace, train: dict | None = None, protocol: str = "base2new") -> RunConfig:
    """The run's configuration: the preset (``--preset``, else the one the method, ``protocol`` and ``--model``
    start from), then ``--set``, then the model flags, then ``train`` (the command's own options, by flag:
    ``{"shots": 5}``) and ``--workers``."""
    cfg = resolve(args.method, args.preset, args.sets, args.model, args.pretrained, protocol)
    flags = {**(train or {}), "workers": getattr(args, "workers", None)}
    for flag, value in flags.items():
        if value is None:
            continue
        try:
            cfg = cfg.with_values({f"train.{FLAG_OPTIONS.get(flag, flag)}": value})
        except MetapromptError as err:
            raise MetapromptError(f"--{flag} {value}: {err}") from None
    return cfg


FLAG_OPTIONS = {"workers": "num_workers"}
"""Command-line flags whose training option has another name."""


def add_artifact_args(p: argparse.ArgumentParser) -> None:
    """The trained prompts a command loads, where their CLIP's weights come from, and its precision."""
    from ..precision import PRECISIONS

    p.add_argument("--prompts", required=True, help="prompt artifact (prompts.safetensors) written by `metaprompt train`")
    p.add_argument("--model", default=None,
                   help="build this model instead of the artifact's; needed when it was trained on a model config "
                        "file, which is not opened unless named here")
    p.add_argument("--pretrained", default=None,
                   help="load CLIP weights from here instead of the artifact's pretrained tag; needed when it was trained on "
                        "a local weights file, which is not opened unless named here")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="numeric precision (default: the one the artifact was trained in; auto: bf16 on a GPU, "
                        "fp32 elsewhere)")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    add_device_arg(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--workers", type=int, default=None, help="data-loading worker processes (default: 2 on the CPU; on a GPU the CPU cores per local process less one, at most 8)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip truncated or unreadable images (counted in the results) instead of stopping")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels on a GPU (torch.use_deterministic_algorithms, cuBLAS workspace "
                        "config): runs and resumes repeat bit for bit, a little slower; an op with no deterministic "
                        "kernel then stops the run naming it. On the CPU runs repeat without it")
    g = p.add_argument_group("compute (exact shortcuts and memory)")
    g.add_argument("--reference-compute", action="store_true",
                   help="turn every exact shortcut off and compute as the reference codebases do (for comparisons)")
    g.add_argument("--class-chunk", type=int, default=0,
                   help="encode at most this many class prompts per text-encoder call (0: all at once)")
    g.add_argument("--text-checkpointing", action="store_true",
                   help="activation checkpointing in the text encoder (less memory)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:N, mps (default: cuda when "
                                                  "available, else cpu)")


def compute_options(args: argparse.Namespace) -> "ComputeOptions":
    from ..methods import ComputeOptions

    if args.class_chunk < 0:
        raise MetapromptError(f"--class-chunk must be 0 (all at once) or more, got {args.class_chunk}")
    memory = {"class_chunk": args.class_chunk, "text_checkpointing": args.text_checkpointing}
    return ComputeOptions.reference(**memory) if args.reference_compute else ComputeOptions(**memory)


def device_of(args: argparse.Namespace) -> str:
    """The device ``--device`` names (checked against this machine), or cuda when there is one, else cpu."""
    from .. import distributed as dist

    return dist.select_device(args.device)


def start_runtime(args: argparse.Namespace) -> str:
    """Before anything runs: ``--deterministic``, the device, and (under torchrun) the process group with the
    device's backend. Returns the device."""
    from .. import distributed as dist

    if getattr(args, "deterministic", False):
        dist.use_deterministic_algorithms()
    device = device_of(args)
    dist.init_from_environment(device)
    return device


def class_list(text: str | None) -> list[str] | None:
    """The class names ``--classes`` gives (None when the option is absent): comma-separated, each once."""
    if text is None:
        return None
    names = [name.strip() for name in text.split(",")]
    if not any(names) or not all(names):
        raise MetapromptError(f"--classes {text!r}: expected comma-separated class names, none of them empty")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise MetapromptError(f"--classes {text!r}: {', '.join(map(repr, repeated))} given more than once; expected "
                              "each class once")
    return names


def task_spec(args: argparse.Namespace) -> TaskSpec:
    if args.target_domain and args.classes != "all":
        raise MetapromptError(f"--classes {args.classes} with --target-domain: domain generalisation keeps every class; "
                              "expected --classes all (the default), or no --target-domain for a base / new split")
    return TaskSpec(dataset=args.dataset, root=args.root, classes=args.classes, target=args.target_domain)
