"""One registry of datasets, keyed by the names users type (``eurosat``, ``oxford_pets``, ``pacs``...).

A reader takes the data root (the folder that holds one folder per dataset, CoOp's ``$DATA``) and
returns :class:`DatasetSplits`. A path to a plain image folder (``<dir>/<split>/<class>/``) is accepted
as a dataset too, read by :func:`metaprompt.data.imagefolder.read_image_folder`.

The reader modules register themselves with :func:`register` when they are imported, which the package's
``__init__`` does: importing any part of :mod:`metaprompt.data` fills the registry.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

from ..errors import MetapromptError
from ..plugins import DATASET_GROUP, load, plugin_entry, plugin_names
from .base import DatasetSplits

Reader = Callable[[Path], DatasetSplits]
DATASETS: dict[str, Reader] = {}
DATASET_FOLDERS: dict[str, tuple[str, ...]] = {}
"""Registry name -> its folder under the data root, then the other names users have for it."""


def register(name: str, folder: str | tuple[str, ...] | None = None) -> Callable[[Reader], Reader]:
    """Register a reader under ``name``; ``folder`` is the dataset's folder under the data root, or its
    accepted names, the usual one first (none for readers that take a folder of their own, such as
    ``imagefolder``)."""
    def wrap(fn: Reader) -> Reader:
        DATASETS[name] = fn
        if folder is not None:
            DATASET_FOLDERS[name] = (folder,) if isinstance(folder, str) else tuple(folder)
        return fn
    return wrap


def folder_of(root: str | Path, name: str) -> Path | None:
    """The folder of dataset ``name`` under ``root`` (the first accepted name present), or None."""
    return next((Path(root) / f for f in DATASET_FOLDERS[name] if (Path(root) / f).is_dir()), None)


def describe_folders(name: str) -> str:
    """``VLCS/ (or vlcs/)``: where dataset ``name`` is looked for."""
    first, *others = DATASET_FOLDERS[name]
    return f"{first}/" + (f" (or {', '.join(o + '/' for o in others)})" if others else "")


def known_datasets() -> list[str]:
    """The datasets that live under a data root, in registration order (installed plugins' last); not those of
    descriptor files, whose folder is an absolute path of their own."""
    register_plugins()
    return [name for name, folders in DATASET_FOLDERS.items() if not Path(folders[0]).is_absolute()]


@functools.lru_cache(maxsize=1)
def register_plugins() -> None:
    """Register the datasets other packages declare (:mod:`metaprompt.plugins`): each reads ``ROOT/<name>``."""
    for name in plugin_names(DATASET_GROUP):
        if name not in DATASETS:
            reader = load(plugin_entry(DATASET_GROUP, name), "dataset")
            if not callable(reader):
                raise MetapromptError(f"dataset plugin {name!r}: expected a reader (data root) -> DatasetSplits, "
                                      f"found {type(reader).__name__}")
            register(name, name)(_named_reader(name, reader))


def _named_reader(name: str, reader: Reader) -> Reader:
    def read(root: Path) -> DatasetSplits:
        splits = reader(root)
        if not isinstance(splits, DatasetSplits):
            raise MetapromptError(f"dataset plugin {name!r} returned {type(splits).__name__}; expected DatasetSplits")
        return splits
    return read


def build_dataset(name: str, root: str | Path) -> DatasetSplits:
    """Read dataset ``name`` under ``root``. ``imagefolder`` reads ``root`` itself as a plain image folder."""
    root = Path(root)
    if not root.exists():
        raise MetapromptError(f"data root {root} does not exist (expected the folder that holds the dataset folders)")
    register_plugins()
    if name not in DATASETS:
        raise MetapromptError(f"unknown dataset {name!r}; expected one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](root)

