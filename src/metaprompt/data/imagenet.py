"""ImageNet and its four test-only variants, in CoOp's layout.

Each folder holds a ``classnames.txt`` (``<wnid> <class name>`` per line). As in CoOp, labels follow the
sorted wnid folders and names come from ``classnames.txt`` by wnid, whatever the order of its lines; a
class's images are in the order the file system lists them (CoOp's ``listdir``, which its few-shot draw
samples from: the same seed picks the same images on the same disk, and on another disk possibly others, as
in CoOp). ImageNet's test set is ``images/val`` and, as in CoOp, it is also the validation set (no few-shot
val is drawn). The variants are test-only (cross-dataset evaluation): their train and val splits are empty
by design. ImageNet-A and ImageNet-R cover 200 classes: their labels follow the sorted wnid folders present.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import MetapromptError
from .base import Datum, DatasetSplits
from .layout import (AS_LISTED, dataset_folder, image_files, images_in, malformed, numbered_lines, require_dir,
                     require_items, subfolders)
from .registry import register

CLASSNAMES_FILE = "classnames.txt"
CLASSNAMES_LINE = "'<wnid> <class name>' (e.g. 'n01440764 tench')"


def read_classnames(path: Path) -> dict[str, str]:
    """``classnames.txt``: wnid -> class name (the rest of the line, as CoOp reads it)."""
    names = {}
    for number, line in numbered_lines(path, f"lines {CLASSNAMES_LINE}"):
        wnid, _, name = line.partition(" ")
        if not name.strip():
            raise malformed(path, number, line, CLASSNAMES_LINE)
        names[wnid] = name.strip()
    if not names:
        raise MetapromptError(f"{path}: no classes found (expected lines {CLASSNAMES_LINE})")
    return names


def _wnid_items(split_dir: Path, wnids: list[str], classnames: dict[str, str], source: Path) -> list[Datum]:
    """Images of ``split_dir/<wnid>/`` for each wnid, as listed; label = index in ``wnids``."""
    items = []
    for label, wnid in enumerate(wnids):
        name = classnames[wnid]
        items += [Datum(str(p), label, name) for p in images_in(split_dir / wnid, AS_LISTED)]
    return require_items(items, source, split_dir.name)


def _wnid_folders(split_dir: Path, classnames: dict[str, str], classnames_file: Path) -> list[str]:
    """The sorted wnid folders of ``split_dir``; each must be listed in ``classnames_file``."""
    wnids = [p.name for p in subfolders(split_dir, "one folder per class, named by wnid (e.g. n01440764/)")]
    unknown = [w for w in wnids if w not in classnames]
    if unknown:
        raise MetapromptError(f"{split_dir}: class folders {unknown[:5]} are not listed in {classnames_file}")
    return wnids


def _require_class_folders(split_dir: Path) -> None:
    """Refuse an ImageNet split whose images lie loose instead of in wnid folders (the val set as
    distributed is not sorted into class folders)."""
    loose = image_files(require_dir(split_dir, "one folder per class, named by wnid"))
    if loose:
        raise MetapromptError(
            f"{split_dir}: holds {len(loose)} images directly, expected them sorted into one folder per class "
            f"named by wnid ({split_dir}/<wnid>/*.JPEG); sort the val images into class folders first "
            "(e.g. with the valprep.sh script from the PyTorch ImageNet example)")


@register("imagenet", "imagenet")
def read_imagenet(root: str | Path) -> DatasetSplits:
    folder = dataset_folder(root, "imagenet", f"images/train/<wnid>/, images/val/<wnid>/ and {CLASSNAMES_FILE}")
    classnames_file = folder / CLASSNAMES_FILE
    classnames = read_classnames(classnames_file)
    wnids = sorted(classnames)
    splits = {}
    for split in ("train", "val"):
        split_dir = folder / "images" / split
        _require_class_folders(split_dir)
        present = _wnid_folders(split_dir, classnames, classnames_file)
        absent = [w for w in wnids if w not in present]
        if absent:
            raise MetapromptError(
                f"{split_dir}: no folder for {len(absent)} of the {len(wnids)} classes in {classnames_file} "
                f"(e.g. {absent[0]}/)")
        splits[split] = _wnid_items(split_dir, wnids, classnames, split_dir)
    return DatasetSplits.from_splits("imagenet", [classnames[w] for w in wnids], {**splits, "test": splits["val"]},
                                     template="imagenet", draw_val=False)


def _test_only(name: str, classnames: list[str], test: list[Datum]) -> DatasetSplits:
    return DatasetSplits.from_splits(name, classnames, {"test": test}, template=name)


@register("imagenetv2", "imagenetv2")
def read_imagenetv2(root: str | Path) -> DatasetSplits:
    """ImageNetV2 (matched frequency): folders ``0..999`` named by label, in ``classnames.txt`` order."""
    image_dir_name = "imagenetv2-matched-frequency-format-val"
    folder = dataset_folder(root, "imagenetv2", f"{image_dir_name}/<0..999>/ and {CLASSNAMES_FILE}")
    classnames = list(read_classnames(folder / CLASSNAMES_FILE).values())
    image_dir = folder / image_dir_name
    items = []
    for class_dir in subfolders(image_dir, "one folder per class, named by label 0..999"):
        if not class_dir.name.isdigit() or int(class_dir.name) >= len(classnames):
            raise MetapromptError(f"{class_dir}: expected class folders named by label "
                                  f"0..{len(classnames) - 1}, found {class_dir.name!r}")
        label = int(class_dir.name)
        items += [Datum(str(p), label, classnames[label]) for p in images_in(class_dir)]
    return _test_only("imagenetv2", classnames, items)


def _read_wnid_variant(root: str | Path, name: str, folder_name: str, image_dir_name: str) -> DatasetSplits:
    """A variant laid out as ``<folder>/<image_dir>/<wnid>/`` with ``<folder>/classnames.txt``; its
    classes are the wnid folders present, labelled in sorted wnid order."""
    folder = dataset_folder(root, folder_name, f"{image_dir_name}/<wnid>/ and {CLASSNAMES_FILE}")
    classnames_file = folder / CLASSNAMES_FILE
    classnames = read_classnames(classnames_file)
    image_dir = folder / image_dir_name
    wnids = _wnid_folders(image_dir, classnames, classnames_file)
    test = _wnid_items(image_dir, wnids, classnames, image_dir)
    return _test_only(name, [classnames[w] for w in wnids], test)


@register("imagenet_sketch", "imagenet-sketch")
def read_imagenet_sketch(root: str | Path) -> DatasetSplits:
    return _read_wnid_variant(root, "imagenet_sketch", "imagenet-sketch", "images")


@register("imagenet_a", "imagenet-adversarial")
def read_imagenet_a(root: str | Path) -> DatasetSplits:
    return _read_wnid_variant(root, "imagenet_a", "imagenet-adversarial", "imagenet-a")


@register("imagenet_r", "imagenet-rendition")
def read_imagenet_r(root: str | Path) -> DatasetSplits:
    return _read_wnid_variant(root, "imagenet_r", "imagenet-rendition", "imagenet-r")
