"""Domain-generalisation layouts (Dassl's folders, and the names the released MetaPrompt code uses) and the
offline world's DomainNet-style copy.

Two kinds of layout, each read by one parameterised function:

- list files (PACS, DomainNet, world_dg): ``<domain>_<split>.txt`` with ``<relpath> <label>`` lines, in
  ``splits/`` (DomainNet's download puts them beside the domain folders: accepted too);
- class folders (VLCS, OfficeHome): ``<domain>/<split>/<class>/*.jpg``, labels from the sorted class folders,
  images in the order the file system lists them (``glob``'s, as the reference readers take them).

Every reader returns all domains at once: each Datum names its domain, and train / val / test hold every
domain's items of that split, in the reference readers' order (domain, then the list or listing). Which of
them a leave-one-domain-out task uses is decided in :func:`metaprompt.data.fewshot.dg_task`. Class names
are the ones the reference readers give (class folders as they are; OfficeHome's lower-cased; VLCS's
numbered folders are bird, car, chair, dog, person).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from ..benchmark import DG_DOMAINS
from ..errors import MetapromptError
from .base import Datum, DatasetSplits
from .layout import (AS_LISTED, SPLITS, classnames_of, dataset_folder, existing_image, image_files, numbered_lines,
                     path_and_label, require_items, subfolders)
from .registry import register


@dataclass(frozen=True)
class ListFileLayout:
    """``<folder>/<list dir>/<list file>`` per domain and split, lines ``<relpath> <label>`` with relpaths
    relative to ``<folder>/<image_dir>``. ``list_files`` maps a split to its file name pattern (``{}`` is the
    domain); a split without a pattern is empty. Class names come from each relpath's class folder.
    ``folders`` are the dataset folder's accepted names, ``list_dirs`` the sub-folders the lists may be in."""

    name: str
    folders: tuple[str, ...]
    domains: tuple[str, ...]
    list_files: dict[str, str]
    image_dir: str = ""
    first_label: int = 0
    skip: frozenset[str] = field(default_factory=frozenset)
    list_dirs: tuple[str, ...] = ("splits",)


PACS = ListFileLayout(
    name="pacs", folders=("pacs",), domains=DG_DOMAINS["pacs"],
    list_files={"train": "{}_train_kfold.txt", "val": "{}_crossval_kfold.txt", "test": "{}_test_kfold.txt"},
    image_dir="images", first_label=1,
    skip=frozenset({"sketch/dog/n02103406_4068-1.png"}),  # an unreadable file listed in the official splits
)
DOMAINNET = ListFileLayout(
    name="domainnet", folders=("domainnet",), domains=DG_DOMAINS["domainnet"],
    list_files={"train": "{}_train.txt", "test": "{}_test.txt"}, list_dirs=("splits", ""),
)
WORLD_DG = ListFileLayout(
    name="world_dg", folders=("world",), domains=DG_DOMAINS["world_dg"],
    list_files={"train": "{}_train.txt", "test": "{}_test.txt"},
)


def read_list_file_dg(root: str | Path, layout: ListFileLayout) -> DatasetSplits:
    """Read a DG dataset whose splits are ``<domain>_<split>.txt`` list files."""
    lists = ", ".join(sorted({p.format("<domain>") for p in layout.list_files.values()}))
    folder = dataset_folder(root, layout.folders, f"<domain>/<class>/ image folders and splits/{lists}")
    list_dir = _list_dir(folder, layout)
    image_dir = folder / layout.image_dir
    splits: dict[str, list[Datum]] = {}
    for split in SPLITS:
        pattern = layout.list_files.get(split)
        splits[split] = [] if pattern is None else [
            item for domain in layout.domains
            for item in _list_items(list_dir / pattern.format(domain), image_dir, domain, split, layout)]
    classnames = classnames_of((d for split in SPLITS for d in splits[split]), list_dir)
    return DatasetSplits.from_splits(layout.name, classnames, splits, domains=list(layout.domains))


def _list_dir(folder: Path, layout: ListFileLayout) -> Path:
    """Where the list files are: the first of ``layout.list_dirs`` holding the first domain's train list."""
    first = layout.list_files["train"].format(layout.domains[0])
    for sub in layout.list_dirs:
        if (folder / sub / first).is_file():
            return folder / sub
    places = " or ".join(str(folder / sub / first) for sub in layout.list_dirs)
    raise MetapromptError(f"{folder}: no list file {first} (expected {places}; the dataset's download has "
                          "one <domain>_<split>.txt list per domain and split)")


def _list_items(list_file: Path, image_dir: Path, domain: str, split: str, layout: ListFileLayout) -> list[Datum]:
    expected = (f"'<relpath> <label>' lines, relpath relative to {image_dir} and labels counted from "
                f"{layout.first_label} (e.g. '{domain}/<class>/<file> {layout.first_label}')")
    items = []
    for number, line in numbered_lines(list_file, expected):
        relpath, label = path_and_label(list_file, number, line, expected)
        if relpath in layout.skip:
            continue
        impath = existing_image(image_dir, relpath, list_file, f"line {number}")
        classname = Path(relpath).parent.name  # the class folder, as the reference readers name it
        items.append(Datum(impath, label - layout.first_label, classname, domain))
    return require_items(items, list_file, f"{domain} {split}")


@dataclass(frozen=True)
class FolderLayout:
    """``<folder>/<domain>/<sub-folder>/<class>/*.jpg`` images. ``split_dirs`` maps each split to the
    domain sub-folders it gathers. Labels follow the sorted class folders, which every sub-folder of
    every domain must share; class names are the folder names lower-cased (as Dassl does), or ``classnames``
    by label when the folders are numbered. Images are the ``*.jpg`` files in the listed order (the
    reference readers' ``glob``)."""

    name: str
    folders: tuple[str, ...]
    domains: tuple[str, ...]
    split_dirs: dict[str, tuple[str, ...]]
    classnames: tuple[str, ...] = ()


VLCS = FolderLayout(
    name="vlcs", folders=("VLCS", "vlcs"), domains=DG_DOMAINS["vlcs"],
    split_dirs={"train": ("train",), "val": ("crossval",), "test": ("test",)},
    classnames=("bird", "car", "chair", "dog", "person"),  # the released reader's names for folders 0..4
)
OFFICE_HOME = FolderLayout(
    name="office_home", folders=("office_home_dg", "office_home"), domains=DG_DOMAINS["office_home"],
    split_dirs={"train": ("train",), "val": ("val",), "test": ("train", "val")},  # no test split: test is all
)


def read_folder_dg(root: str | Path, layout: FolderLayout) -> DatasetSplits:
    """Read a DG dataset laid out as ``<domain>/<split>/<class>/`` image folders."""
    subdirs = sorted({d for dirs in layout.split_dirs.values() for d in dirs})
    folder = dataset_folder(root, layout.folders, f"<domain>/{{{','.join(subdirs)}}}/<class>/ image folders")
    domain_dirs = {domain: _domain_dir(folder, domain) for domain in layout.domains}
    class_folders = _shared_class_folders(domain_dirs, subdirs)
    classnames = _folder_classnames(folder, class_folders, layout)
    splits = {split: require_items(_folder_items(domain_dirs, dirs, class_folders, classnames), folder, split)
              for split, dirs in layout.split_dirs.items()}
    return DatasetSplits.from_splits(layout.name, classnames, splits, domains=list(layout.domains))


def _folder_classnames(folder: Path, class_folders: list[str], layout: FolderLayout) -> list[str]:
    if not layout.classnames:
        return [c.lower() for c in class_folders]
    if len(class_folders) > len(layout.classnames):
        raise MetapromptError(f"{folder}: {len(class_folders)} class folders, expected (at most) the "
                              f"{len(layout.classnames)} of {layout.name} ({', '.join(layout.classnames)})")
    return list(layout.classnames[:len(class_folders)])  # by sorted folder index, as the released reader


def _domain_dir(folder: Path, domain: str) -> Path:
    """``folder/<domain>``; Dassl's VLCS download spells domain folders in capitals (``CALTECH``)."""
    for candidate in (folder / domain, folder / domain.upper()):
        if candidate.is_dir():
            return candidate
    raise MetapromptError(f"{folder / domain}: domain folder not found (expected {domain}/ or {domain.upper()}/)")


def _shared_class_folders(domain_dirs: dict[str, Path], subdirs: list[str]) -> list[str]:
    """The sorted class folders, which every ``<domain>/<sub-folder>/`` must hold alike."""
    listings = [(d / sub, [p.name for p in subfolders(d / sub, "one folder per class")])
                for d in domain_dirs.values() for sub in subdirs]
    first_dir, classes = listings[0]
    for path, names in listings[1:]:
        if names != classes:
            differing = sorted(set(names) ^ set(classes))[:5]
            raise MetapromptError(f"{path}: class folders differ from those of {first_dir} (expected the same "
                                  f"classes in every domain and split; differing: {differing})")
    return classes


def _folder_items(domain_dirs: dict[str, Path], subdirs: tuple[str, ...], class_folders: list[str],
                  classnames: list[str]) -> list[Datum]:
    """The ``*.jpg`` images of ``<domain>/<sub>/<class>/`` for every domain and each of ``subdirs``, listed."""
    return [Datum(str(p), label, classnames[label], domain)
            for domain, domain_dir in domain_dirs.items() for sub in subdirs
            for label, name in enumerate(class_folders)
            for p in image_files(domain_dir / sub / name, AS_LISTED, suffixes=(".jpg",), case_sensitive=True)]


for _layout in (PACS, DOMAINNET, WORLD_DG):
    register(_layout.name, _layout.folders)(partial(read_list_file_dg, layout=_layout))
for _folder_layout in (VLCS, OFFICE_HOME):
    register(_folder_layout.name, _folder_layout.folders)(partial(read_folder_dg, layout=_folder_layout))
