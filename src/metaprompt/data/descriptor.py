"""Your own dataset, named, from a small descriptor file: ``--dataset mydata.yaml`` wherever a dataset is asked for.

A descriptor (YAML, or JSON which YAML reads) says::

    name: shapes                 # the name folders, records and tables use
    root: images                 # the images' folder (relative to this file's folder, or absolute)
    classnames: [circle, square] # optional for class folders (default: their sorted names); labels index it
    domains: [photo, sketch]     # optional: the visual domains, which make it a domain-generalisation dataset
    splits:                      # train and test required, val optional
      train: train               # a folder: ROOT[/<domain>]/train/<class>/*.png
      test: lists/{domain}_test.txt  # or a list file (.txt) of '<relpath> <label>' lines, relpath under ROOT

A split given as a folder holds one folder per class, named as the class; with domains it is looked for in each
domain's folder (``ROOT/<domain>/<split folder>``). A split given as a list file names one file per domain
(``{domain}`` in its path) and needs ``classnames``: labels count from ``first_label`` (default 0).

:func:`register_descriptor` reads the file, checks every field, and registers a reader under the descriptor's
name, so every protocol, ``data check`` and the report see the dataset by that name.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import MetapromptError
from ..files import yaml_mapping
from .base import Datum, DatasetSplits
from .layout import SPLITS, absolute, existing_image, image_files, numbered_lines, path_and_label, require_items, subfolders
from .registry import DATASETS, register

SUFFIXES = (".yaml", ".yml", ".json")
LIST_SUFFIX = ".txt"
KEYS = {"name": str, "root": str, "classnames": list, "domains": list, "splits": dict, "first_label": int}
REQUIRED = ("name", "root", "splits")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")
"""A dataset or domain name: it names folders (``b2n/coop/<name>/``), so no slashes, spaces or leading dot."""
DOMAIN = "{domain}"


@dataclass(frozen=True)
class Descriptor:
    """A dataset described by the file at ``path``: ``splits`` maps train / val / test to a class-folder name
    or a list-file path pattern, relative to ``root``."""

    path: Path
    name: str
    root: Path
    splits: dict[str, str]
    classnames: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    first_label: int = 0
    sha256: str = ""

    def is_list(self, split: str) -> bool:
        return self.splits[split].endswith(LIST_SUFFIX)


DESCRIPTORS: dict[str, Descriptor] = {}
"""The descriptors registered in this process, by dataset name."""


def descriptor_settings(name: str) -> dict:
    """What a run on dataset ``name`` read, when a descriptor of this process describes it: recorded with the run's
    settings, so that a run folder made from another version of the descriptor is not taken for this one."""
    descriptor = DESCRIPTORS.get(name)
    if descriptor is None:
        return {}
    return {"dataset.root": str(descriptor.root), "dataset.splits": dict(descriptor.splits),
            "dataset.classnames": list(descriptor.classnames), "dataset.domains": list(descriptor.domains),
            "dataset.first_label": descriptor.first_label}


def is_descriptor(value: object) -> bool:
    """Whether a ``--dataset`` value names a descriptor file rather than a registered dataset."""
    return isinstance(value, str) and value.lower().endswith(SUFFIXES)


def register_descriptor(path: str | Path) -> str:
    """Read the descriptor at ``path`` and register its dataset (in place of an earlier descriptor's of the same
    name); returns the dataset's name. The name of a built-in or installed dataset is refused."""
    descriptor = load_descriptor(path)
    if descriptor.name in DATASETS and descriptor.name not in DESCRIPTORS:
        raise MetapromptError(f"{descriptor.path}: name {descriptor.name!r} is a built-in or installed dataset's; "
                              "expected a name of its own")
    DESCRIPTORS[descriptor.name] = descriptor
    register(descriptor.name, str(descriptor.root))(lambda _root: read_descriptor(descriptor))
    return descriptor.name


def load_descriptor(path: str | Path) -> Descriptor:
    """The descriptor in file ``path``, every field checked (one line naming the file and field when wrong)."""
    path = absolute(path)
    raw = _read(path)
    data = _mapping(path, raw)
    for key, value in data.items():
        if key not in KEYS:
            raise MetapromptError(f"{path}: unknown key {key!r}; a dataset descriptor takes {', '.join(KEYS)}")
        if not isinstance(value, KEYS[key]) or isinstance(value, bool):
            raise MetapromptError(f"{path}: {key} must be a {KEYS[key].__name__}, got {value!r}")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise MetapromptError(f"{path}: missing {', '.join(missing)} (a descriptor needs name, root and splits)")
    name = _name(path, "name", data["name"])
    classnames = _names(path, "classnames", data.get("classnames", []), pattern=None)
    domains = _names(path, "domains", data.get("domains", []), pattern=NAME)
    if len(domains) == 1:
        raise MetapromptError(f"{path}: domains lists one domain ({domains[0]}); expected two or more (or none)")
    root = Path(data["root"]).expanduser()
    descriptor = Descriptor(path=path, name=name, root=absolute(root if root.is_absolute() else path.parent / root),
                            splits=_splits(path, data["splits"], bool(domains)), classnames=classnames,
                            domains=domains, first_label=data.get("first_label", 0),
                            sha256=hashlib.sha256(raw).hexdigest())
    if not descriptor.classnames and any(descriptor.is_list(s) for s in descriptor.splits):
        raise MetapromptError(f"{path}: splits given as list files need classnames (the names their labels index)")
    return descriptor


def _read(path: Path) -> bytes:
    if not path.is_file():
        raise MetapromptError(f"dataset descriptor {path} not found (expected a YAML file with name, root and splits)")
    return path.read_bytes()


def _mapping(path: Path, raw: bytes) -> dict:
    return yaml_mapping(path, raw, "a YAML dataset descriptor", "name, root and splits")


def _name(path: Path, key: str, value: object) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise MetapromptError(f"{path}: {key} {value!r} is not a usable name (expected letters, digits, _ . + -, "
                              "not starting with a dot: it names folders)")
    return value


def _names(path: Path, key: str, values: list, pattern: re.Pattern | None) -> tuple[str, ...]:
    for value in values:
        if pattern is not None:
            _name(path, key, value)
        elif not isinstance(value, str) or not value.strip():
            raise MetapromptError(f"{path}: {key} holds {value!r}; expected non-empty strings")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise MetapromptError(f"{path}: {key} repeats {', '.join(repeated)}; expected each once")
    return tuple(values)


def _splits(path: Path, splits: dict, has_domains: bool) -> dict[str, str]:
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise MetapromptError(f"{path}: splits has {', '.join(map(str, unknown))}; expected train, test and "
                              "optionally val")
    if "train" not in splits or "test" not in splits:
        raise MetapromptError(f"{path}: splits needs train and test (val is optional)")
    for split, where in splits.items():
        if not isinstance(where, str) or not where.strip():
            raise MetapromptError(f"{path}: splits.{split} must be a folder name or a list file (.txt), got {where!r}")
        if Path(where).is_absolute() or ".." in Path(where).parts:
            raise MetapromptError(f"{path}: splits.{split} {where!r} leaves root; expected a path relative to root")
        if where.endswith(LIST_SUFFIX) and has_domains != (DOMAIN in where):
            expected = ("one list per domain: put {domain} in its path" if has_domains
                        else "no {domain} in its path: the descriptor lists no domains")
            raise MetapromptError(f"{path}: splits.{split} {where!r}: expected {expected}")
    if not has_domains and Path(splits["train"]) == Path(splits["test"]):
        raise MetapromptError(f"{path}: splits.train and splits.test are both {splits['test']!r}: the test images "
                              "would be trained on; expected separate splits (with domains, leave-one-domain-out "
                              "tests on the held-out domain, so one folder may serve both there)")
    return dict(splits)


def read_descriptor(descriptor: Descriptor) -> DatasetSplits:
    """The dataset ``descriptor`` describes, read from its root."""
    root = descriptor.root
    if not root.is_dir():
        raise MetapromptError(f"{descriptor.path}: root {root} is not a folder (expected the dataset's images)")
    classnames = list(descriptor.classnames) or _folder_classnames(descriptor)
    splits = {split: [] for split in SPLITS}
    for split in descriptor.splits:
        for domain in descriptor.domains or ("",):
            read = _list_items if descriptor.is_list(split) else _folder_items
            splits[split] += read(descriptor, split, domain, classnames)
        if split != "val":
            require_items(splits[split], descriptor.path, split)
    return DatasetSplits.from_splits(descriptor.name, classnames, splits, domains=list(descriptor.domains),
                                     template="default")


def _split_folder(descriptor: Descriptor, split: str, domain: str) -> Path:
    return descriptor.root / domain / descriptor.splits[split]


def _folder_classnames(descriptor: Descriptor) -> list[str]:
    """Without ``classnames``: the sorted class folders of the first folder split (of the first domain)."""
    split = next(s for s in SPLITS if s in descriptor.splits and not descriptor.is_list(s))
    folder = _split_folder(descriptor, split, descriptor.domains[0] if descriptor.domains else "")
    return [p.name for p in subfolders(folder, "one folder per class")]


def _folder_items(descriptor: Descriptor, split: str, domain: str, classnames: list[str]) -> list[Datum]:
    folder = _split_folder(descriptor, split, domain)
    label_of = {name: label for label, name in enumerate(classnames)}
    items = []
    for class_dir in subfolders(folder, "one folder per class"):
        if class_dir.name not in label_of:
            raise MetapromptError(f"{class_dir}: not one of the classes of {descriptor.path} (expected folders "
                                  f"named {', '.join(classnames[:8])}{', ...' if len(classnames) > 8 else ''})")
        label = label_of[class_dir.name]
        items += [Datum(str(p), label, classnames[label], domain) for p in image_files(class_dir)]
    return items


def _list_items(descriptor: Descriptor, split: str, domain: str, classnames: list[str]) -> list[Datum]:
    list_file = descriptor.root / descriptor.splits[split].replace(DOMAIN, domain)
    first, count = descriptor.first_label, len(classnames)
    expected = (f"'<relpath> <label>' lines, relpath relative to {descriptor.root}, labels {first}.."
                f"{first + count - 1} indexing classnames")
    items = []
    for number, line in numbered_lines(list_file, expected):
        relpath, label = path_and_label(list_file, number, line, expected)
        if not first <= label < first + count:
            raise MetapromptError(f"{list_file}: line {number} has label {label}; expected {expected}")
        impath = existing_image(descriptor.root, relpath, list_file, f"line {number}")
        items.append(Datum(impath, label - first, classnames[label - first], domain))
    return items
