"""``metaprompt data check``: which datasets under a data root are found, missing or broken, and for a
broken one exactly which file or folder is wrong and what was expected (the reader's own message)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import MetapromptError
from .base import DatasetSplits
from .layout import absolute
from .registry import DATASET_FOLDERS, DATASETS, describe_folders, folder_of, known_datasets

FOUND, MISSING, BROKEN = "found", "missing", "broken"


@dataclass(frozen=True)
class DatasetCheck:
    """The state of one dataset under a data root; ``detail`` summarises it or says what is wrong."""

    name: str
    status: str
    detail: str


def check_dataset(name: str, root: str | Path) -> DatasetCheck:
    """Read dataset ``name`` under ``root`` and report whether it is found, missing or broken."""
    if name not in DATASET_FOLDERS:
        raise MetapromptError(f"unknown dataset {name!r}; expected one of: {', '.join(known_datasets())}")
    if folder_of(root, name) is None:
        return DatasetCheck(name, MISSING, f"no folder {absolute(root) / describe_folders(name)}")
    try:
        splits = DATASETS[name](Path(root))
    except (MetapromptError, OSError) as err:
        return DatasetCheck(name, BROKEN, str(err))
    return DatasetCheck(name, FOUND, summary(splits))


def check_datasets(root: str | Path, names: list[str] | None = None) -> list[DatasetCheck]:
    """Check ``names`` (every known dataset when none) under ``root``."""
    if not Path(root).is_dir():
        raise MetapromptError(f"data root {root} does not exist (expected the folder that holds the dataset folders)")
    return [check_dataset(name, root) for name in (names or known_datasets())]


def summary(splits: DatasetSplits) -> str:
    """One line: class count, split sizes and, for DG datasets, the domains."""
    text = (f"{splits.num_classes} classes; train {len(splits.train)}, val {len(splits.val)}, "
            f"test {len(splits.test)} images")
    return text + (f"; domains {', '.join(splits.domains)}" if splits.domains else "")


def format_check(result: DatasetCheck) -> str:
    return f"{result.name:<16} {result.status:<8} {result.detail}"


def failed(results: list[DatasetCheck], requested: bool) -> bool:
    """Whether ``data check`` should exit non-zero: any requested dataset not found, or (when none was
    requested, so absent datasets are expected) any broken one."""
    bad = {MISSING, BROKEN} if requested else {BROKEN}
    return any(r.status in bad for r in results)
