"""``metaprompt data check``: which datasets under a data root are found, missing or broken, and for a
broken one exactly which file or folder is wrong and what was expected (the reader's own message)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import MetapromptError
from .base import DatasetSplits
from .layout import absolute
from .registry import DATASET_FOLDERS, DATASETS, describe_folders, folder_of, known_datasets

FOUND, MISSING, BROKEN = "found", "missing", "broken"


PROTOCOL_SHOTS = {"base-to-new": 16, "domain generalisation": 5}
"""The most training images per class a protocol draws (per class per source domain in domain generalisation)."""
CLASSES_SHOWN = 5


@dataclass(frozen=True)
class DatasetCheck:
    """The state of one dataset under a data root; ``detail`` summarises it or says what is wrong, ``notes``
    (of a found dataset) show a few class names and the smallest class of each split against the shots."""

    name: str
    status: str
    detail: str
    notes: tuple[str, ...] = ()


def check_dataset(name: str, root: str | Path, shots: int | None = None) -> DatasetCheck:
    """Read dataset ``name`` under ``root`` and report whether it is found, missing or broken; ``shots``
    (default: its protocol's) is compared with the smallest class."""
    if name not in DATASET_FOLDERS:
        raise MetapromptError(f"unknown dataset {name!r}; expected one of: {', '.join(known_datasets())}")
    if folder_of(root, name) is None:
        return DatasetCheck(name, MISSING, f"no folder {absolute(root) / describe_folders(name)}")
    try:
        splits = DATASETS[name](Path(root))
    except (MetapromptError, OSError) as err:
        return DatasetCheck(name, BROKEN, str(err))
    return DatasetCheck(name, FOUND, summary(splits), (class_names(splits), smallest_classes(splits, shots)))


def check_datasets(root: str | Path, names: list[str] | None = None, shots: int | None = None) -> list[DatasetCheck]:
    """Check ``names`` (every known dataset when none) under ``root``."""
    if not Path(root).is_dir():
        raise MetapromptError(f"data root {root} does not exist (expected the folder that holds the dataset folders)")
    return [check_dataset(name, root, shots) for name in (names or known_datasets())]


def class_names(splits: DatasetSplits) -> str:
    """The first class names, as the prompts will read them (numbered folders show here as numbers)."""
    shown = ", ".join(splits.classnames[:CLASSES_SHOWN])
    more = f", ... ({splits.num_classes - CLASSES_SHOWN} more)" if splits.num_classes > CLASSES_SHOWN else ""
    return f"classes: {shown}{more}"


def smallest_classes(splits: DatasetSplits, shots: int | None = None) -> str:
    """The smallest class of each split (per domain in domain generalisation), against the shots its
    protocol draws: a class with fewer gives all its images."""
    per_domain = bool(splits.domains)
    protocol = "domain generalisation" if per_domain else "base-to-new"
    shots = shots if shots is not None else PROTOCOL_SHOTS[protocol]
    parts = []
    for split in ("train", "val", "test"):
        counts = Counter((d.domain, d.label) for d in getattr(splits, split))
        if not counts:
            parts.append(f"{split} -")
            continue
        (domain, label), n = min(counts.items(), key=lambda kv: kv[1])
        where = f"{splits.classnames[label]}" + (f" in {domain}" if per_domain else "")
        parts.append(f"{split} {n} ({where})")
    text = "smallest class: " + ", ".join(parts)
    short = sum(n < shots for n in Counter((d.domain, d.label) for d in splits.train).values())
    if splits.train:
        unit = "class-domain pairs" if per_domain else "classes"
        text += (f"; {protocol} draws {shots} training images per class{' per source domain' if per_domain else ''}: "
                 + (f"{short} {unit} have fewer (all their images are taken)" if short else "every class has them"))
    return text


def summary(splits: DatasetSplits) -> str:
    """One line: class count, split sizes and, for DG datasets, the domains."""
    text = (f"{splits.num_classes} classes; train {len(splits.train)}, val {len(splits.val)}, "
            f"test {len(splits.test)} images")
    return text + (f"; domains {', '.join(splits.domains)}" if splits.domains else "")


def format_check(result: DatasetCheck) -> str:
    lines = [f"{result.name:<16} {result.status:<8} {result.detail}"]
    return "\n".join(lines + [f"{'':<25} {note}" for note in result.notes])


def failed(results: list[DatasetCheck], requested: bool) -> bool:
    """Whether ``data check`` should exit non-zero: any requested dataset not found, or (when none was
    requested, so absent datasets are expected) any broken one."""
    bad = {MISSING, BROKEN} if requested else {BROKEN}
    return any(r.status in bad for r in results)
