"""``metaprompt data prepare``: build CoOp's folder layout from the files torchvision's dataset classes
download, so a user without the CoOp folders can still run the base-to-new protocol.

torchvision's folder is linked into CoOp's (a relative symlink, else hard links, else a copy), and when
the official ``split_zhou_*.json`` is absent one is made with the recipe CoOp's reader uses for that dataset
when it has none: where the dataset has an official test set (OxfordPets, StanfordCars, SUN397's
Training_01 / Testing_01) that test set is kept and the official train(+val) is split per class 80% train,
20% val (CoOp's ``OxfordPets.split_trainval``); elsewhere each class is split 50% train, 20% val, 30% test
(``DTD.read_and_split_data``). Both shuffle with a seed; the split file names its recipe under ``recipe``.
Class names follow CoOp's conventions for each dataset.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..errors import MetapromptError
from ..files import atomic_write_text
from .check import summary
from .coop import LAYOUT_BY_NAME
from .layout import absolute, image_files, malformed, numbered_lines, require_file, subfolders
from .registry import DATASET_FOLDERS, build_dataset

TRAIN_FRACTION, VAL_FRACTION = 0.5, 0.2  # CoOp's read_and_split_data; test takes the rest
TRAINVAL_VAL_FRACTION = 0.2  # CoOp's split_trainval: the rest of train(+val) is train
DEFAULT_SEED = 1

ClassList = list[tuple[str, list[str]]]  # per label: (class name, image paths relative to CoOp's image folder)
Log = Callable[[str], None]
Official = Callable[[Path], tuple[ClassList, ClassList]]
"""Reads CoOp's dataset folder into the official train(+val) and test images per class (same labels)."""


@dataclass(frozen=True)
class TorchvisionSource:
    """Where a torchvision dataset class puts its files and how CoOp's layout is made from them.

    ``folder`` is torchvision's folder under the data root; each path in ``links`` under it is linked at
    the same path under CoOp's dataset folder. For the split file, ``classes`` reads CoOp's dataset folder
    (once linked) into the images per class (the 50 / 20 / 30 recipe), or ``official`` into the official
    train(+val) and test images per class (the 80 / 20 recipe); neither when CoOp's layout needs no split file.
    """

    tv_class: str
    folder: str
    links: tuple[str, ...]
    classes: Callable[[Path], ClassList] | None = None
    official: Official | None = None
    reads_mat_files: bool = False
    """Its labels come in MATLAB files, which need scipy (as torchvision's own reader does)."""


EUROSAT_CLASSNAMES = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}
CALTECH_IGNORED = ("BACKGROUND_Google", "Faces_easy")
CALTECH_CLASSNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


def _folder_classes(folder: Path, image_dir: str, ignored: tuple[str, ...] = (),
                    renamed: dict[str, str] | None = None) -> ClassList:
    """One class per sub-folder of ``folder/image_dir`` (sorted), named by the folder or ``renamed``."""
    renamed = renamed or {}
    return [(renamed.get(d.name, d.name), [f"{d.name}/{p.name}" for p in image_files(d)])
            for d in subfolders(folder / image_dir, "one folder per class") if d.name not in ignored]


SCIPY_HINT = "pip install 'metaprompt-vl[prepare]' (or, in a clone, pip install -e \".[prepare]\")"


def _require_scipy(what: str) -> None:
    """scipy reads MATLAB files; it is the optional ``prepare`` extra, not a core dependency."""
    try:
        import scipy.io  # noqa: F401
    except ImportError:
        raise MetapromptError(f"{what} needs scipy, which is not installed: {SCIPY_HINT}") from None


def _load_mat(path: Path) -> dict:
    _require_scipy(f"reading the MATLAB file {path}")
    from scipy.io import loadmat

    return loadmat(str(require_file(path, "a MATLAB file from the dataset's download")), squeeze_me=True)


def _by_label(pairs: list[tuple[int, str]], names: list[str], source: Path, every_label: bool = False) -> ClassList:
    """Group (1-based label, relpath) pairs into a class list named by ``names[label - 1]`` (every label
    of ``names``, some possibly empty, when ``every_label``: two lists of one dataset then share labels)."""
    grouped: dict[int, list[str]] = defaultdict(list)
    for label, relpath in pairs:
        if not 1 <= label <= len(names):
            raise MetapromptError(f"{source}: label {label} out of range (expected 1..{len(names)})")
        grouped[label].append(relpath)
    labels = range(1, len(names) + 1) if every_label else sorted(grouped)
    return [(names[label - 1], grouped[label]) for label in labels]


def _flowers_classes(folder: Path) -> ClassList:
    """Images ``image_<n>.jpg`` labelled by ``imagelabels.mat``; names from torchvision's Flowers102."""
    from torchvision.datasets import Flowers102

    names = getattr(Flowers102, "classes", None)
    if names is None:
        raise MetapromptError(f"{folder}: this torchvision has no Flowers102 class names; upgrade torchvision "
                              f"or place CoOp's {LAYOUT_BY_NAME['oxford_flowers'].split_file} there")
    labels_file = folder / "imagelabels.mat"
    labels = _load_mat(labels_file)["labels"].ravel()
    pairs = [(int(label), f"image_{n:05d}.jpg") for n, label in enumerate(labels, start=1)]
    return _by_label(pairs, list(names), labels_file)


def _pets_official(folder: Path) -> tuple[ClassList, ClassList]:
    """The images of ``annotations/trainval.txt`` and ``annotations/test.txt``; the class name is the image
    name's breed, lower-cased (as CoOp names them)."""
    expected = "'<image id> <class id> <species> <breed id>' (e.g. 'Abyssinian_100 1 1 1')"
    breeds: dict[int, str] = {}
    pairs: dict[str, list[tuple[int, str]]] = {"trainval.txt": [], "test.txt": []}
    for list_name, listed in pairs.items():
        list_file = folder / "annotations" / list_name
        for number, line in numbered_lines(list_file, f"lines {expected}"):
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise malformed(list_file, number, line, expected)
            label = int(parts[1])
            breeds[label] = parts[0].rsplit("_", 1)[0].lower()
            listed.append((label, f"{parts[0]}.jpg"))
    names = [breeds.get(label, "") for label in range(1, max(breeds) + 1)]
    source = folder / "annotations"
    return (_by_label(pairs["trainval.txt"], names, source, every_label=True),
            _by_label(pairs["test.txt"], names, source, every_label=True))


SUN_PARTITIONS = ("Training_01.txt", "Testing_01.txt")


def _sun_official(folder: Path) -> tuple[ClassList, ClassList]:
    """SUN397's first official partition, ``Training_01.txt`` / ``Testing_01.txt`` (lines like
    ``/a/abbey/sun_aaa.jpg``; in ``sun397/`` as CoOp keeps them, or beside ClassName.txt), over the classes
    of ``SUN397/ClassName.txt`` (``/a/abbey``, ``/b/bakery/shop``), named as CoOp does: the path without its
    letter, words reversed (``shop bakery``)."""
    image_dir = folder / "SUN397"
    class_file = image_dir / "ClassName.txt"
    names, label_of = [], {}
    for number, line in numbered_lines(class_file, "lines like '/a/abbey'"):
        parts = line.strip("/").split("/")
        if len(parts) < 2:
            raise malformed(class_file, number, line, "'/<letter>/<class>[/<sub-class>]' (e.g. '/a/abbey')")
        label_of["/".join(parts)] = len(names) + 1
        names.append(" ".join(reversed(parts[1:])))
    lists = []
    for partition in SUN_PARTITIONS:
        path = next((p for p in (folder / partition, image_dir / partition) if p.is_file()), None)
        if path is None:
            raise MetapromptError(
                f"{folder / partition}: not found (expected SUN397's official partition file, from Partitions.zip "
                f"of the SUN database's download page, in {folder} or {image_dir}); CoOp keeps its test set")
        pairs = []
        for number, line in numbered_lines(path, "lines like '/a/abbey/sun_aaa.jpg'"):
            relpath = line.strip("/")
            if os.path.dirname(relpath) not in label_of:
                raise malformed(path, number, line, f"an image of a class listed in {class_file}")
            pairs.append((label_of[os.path.dirname(relpath)], relpath))
        lists.append(_by_label(pairs, names, path, every_label=True))
    return lists[0], lists[1]


def _cars_official(folder: Path) -> tuple[ClassList, ClassList]:
    """The devkit's train annotations and the test annotations; names as CoOp writes them, year first
    (``2012 Tesla Model S``)."""
    meta = folder / "devkit" / "cars_meta.mat"
    names = []
    for name in _load_mat(meta)["class_names"].ravel():
        words = str(name).split(" ")
        names.append(" ".join(words[-1:] + words[:-1]))
    lists = []
    for annotation_file, image_dir in ((folder / "devkit" / "cars_train_annos.mat", "cars_train"),
                                       (folder / "cars_test_annos_withlabels.mat", "cars_test")):
        records = _load_mat(annotation_file)["annotations"].ravel()
        pairs = [(int(a["class"]), f"{image_dir}/{a['fname']}") for a in records]
        lists.append(_by_label(pairs, names, annotation_file, every_label=True))
    return lists[0], lists[1]


SOURCES: dict[str, TorchvisionSource] = {
    "eurosat": TorchvisionSource("EuroSAT", "eurosat", ("2750",),
                                 partial(_folder_classes, image_dir="2750", renamed=EUROSAT_CLASSNAMES)),
    "dtd": TorchvisionSource("DTD", "dtd/dtd", ("images",), partial(_folder_classes, image_dir="images")),
    "oxford_flowers": TorchvisionSource("Flowers102", "flowers-102", ("jpg", "imagelabels.mat", "setid.mat"),
                                        _flowers_classes, reads_mat_files=True),
    "oxford_pets": TorchvisionSource("OxfordIIITPet", "oxford-iiit-pet", ("images", "annotations"),
                                     official=_pets_official),
    "food101": TorchvisionSource("Food101", "food-101", ("images",), partial(_folder_classes, image_dir="images")),
    "fgvc_aircraft": TorchvisionSource(
        "FGVCAircraft", "fgvc-aircraft-2013b/data",
        ("images", "variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")),
    "caltech101": TorchvisionSource(
        "Caltech101", "caltech101", ("101_ObjectCategories",),
        partial(_folder_classes, image_dir="101_ObjectCategories", ignored=CALTECH_IGNORED,
                renamed=CALTECH_CLASSNAMES)),
    "sun397": TorchvisionSource("SUN397", "", ("SUN397",), official=_sun_official),
    "stanford_cars": TorchvisionSource(
        "StanfordCars", "stanford_cars",
        ("cars_train", "cars_test", "devkit", "cars_test_annos_withlabels.mat"), official=_cars_official,
        reads_mat_files=True),
}
PREPARABLE = tuple(SOURCES)


def prepare_dataset(name: str, root: str | Path, download: bool = False, seed: int = DEFAULT_SEED,
                    log: Log = print) -> Path:
    """Make CoOp's layout of ``name`` under ``root`` from torchvision's files (fetched first when
    ``download``), check it reads, and return CoOp's dataset folder. Progress goes to ``log``."""
    if name not in SOURCES:
        raise MetapromptError(f"cannot prepare {name!r}; expected one of: {', '.join(PREPARABLE)}")
    source = SOURCES[name]
    if source.reads_mat_files:
        _require_scipy(f"preparing {name} (its labels are MATLAB files)")
    root = absolute(root)
    if download:
        _download(source.tv_class, root, log)
    tv_folder = root / source.folder
    target = root / DATASET_FOLDERS[name][0]
    for relative in source.links:
        _link_or_copy(tv_folder / relative, target / relative, source.tv_class, log)
    if source.classes is not None or source.official is not None:
        _ensure_split_file(name, target, source, seed, log)
    splits = build_dataset(name, root)
    log(f"{name}: ready at {target} ({summary(splits)})")
    return target


def _download(tv_class: str, root: Path, log: Log) -> None:
    import torchvision.datasets

    log(f"downloading with torchvision.datasets.{tv_class} into {root} ...")
    root.mkdir(parents=True, exist_ok=True)
    try:
        getattr(torchvision.datasets, tv_class)(root=str(root), download=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise MetapromptError(f"torchvision.datasets.{tv_class} could not download into {root}: {err}") from None


def _link_or_copy(src: Path, dst: Path, tv_class: str, log: Log) -> None:
    """Make ``dst`` show ``src``: a relative symlink (survives moving the root), else hard links, else a
    copy. An existing ``dst`` is kept."""
    if not src.exists():
        raise MetapromptError(f"{src}: not found (expected the files of torchvision.datasets.{tv_class}; "
                              "run with --download to fetch them, or place them there)")
    if dst.exists():
        if not os.path.samefile(src, dst):
            log(f"{dst}: already present, kept as is")
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        dst.symlink_to(os.path.relpath(src, dst.parent), target_is_directory=src.is_dir())
        log(f"{dst}: linked to {src}")
    except OSError:
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=_hard_link_or_copy)
        else:
            _hard_link_or_copy(src, dst)
        log(f"{dst}: symlinks unavailable, hard-linked or copied from {src}")


def _hard_link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _ensure_split_file(name: str, target: Path, source: TorchvisionSource, seed: int, log: Log) -> None:
    split_path = target / LAYOUT_BY_NAME[name].split_file
    if split_path.exists():
        log(f"{split_path}: split file present, kept")
        return
    if source.official is not None:
        split = coop_trainval_split(*source.official(target), seed)
    else:
        split = coop_recipe_split(source.classes(target), seed)
    atomic_write_text(split_path, json.dumps(split, indent=4) + "\n")
    log(f"{split_path}: no official split file, so made one with CoOp's recipe: {split['recipe']}")


def coop_recipe_split(classes: ClassList, seed: int) -> dict:
    """CoOp's split file content where a dataset has no official test set: per class (label = position in
    ``classes``), the images shuffled with ``seed`` and cut into 50% train, 20% val and 30% test (rounded as
    CoOp's read_and_split_data does)."""
    rng = random.Random(seed)
    split: dict = {"train": [], "val": [], "test": [],
                   "recipe": f"CoOp's DTD.read_and_split_data: per class {TRAIN_FRACTION:.0%} train, "
                             f"{VAL_FRACTION:.0%} val, the rest test, shuffled with seed {seed}"}
    for label, (classname, relpaths) in enumerate(classes):
        paths = sorted(relpaths)
        rng.shuffle(paths)
        n_train, n_val = round(len(paths) * TRAIN_FRACTION), round(len(paths) * VAL_FRACTION)
        if min(n_train, n_val, len(paths) - n_train - n_val) < 1:
            raise MetapromptError(f"class {classname!r} has {len(paths)} images; a 50/20/30 split needs at least 4")
        parts = {"train": paths[:n_train], "val": paths[n_train:n_train + n_val], "test": paths[n_train + n_val:]}
        for key, part in parts.items():
            split[key] += [[path, label, classname] for path in part]
    return split


def coop_trainval_split(trainval: ClassList, test: ClassList, seed: int) -> dict:
    """CoOp's split file content where a dataset has an official test set: that test set, and per class the
    official train(+val) images shuffled with ``seed``, 20% (rounded) to val and the rest to train (CoOp's
    OxfordPets.split_trainval). ``trainval`` and ``test`` share labels (their positions)."""
    rng = random.Random(seed)
    split: dict = {"train": [], "val": [], "test": [],
                   "recipe": f"CoOp's OxfordPets.split_trainval: the official test set; per class the official "
                             f"train(+val) split {1 - TRAINVAL_VAL_FRACTION:.0%} train, "
                             f"{TRAINVAL_VAL_FRACTION:.0%} val, shuffled with seed {seed}"}
    for label, (classname, relpaths) in enumerate(trainval):
        paths = sorted(relpaths)
        rng.shuffle(paths)
        n_val = round(len(paths) * TRAINVAL_VAL_FRACTION)
        if not 0 < n_val < len(paths):
            raise MetapromptError(f"class {classname!r} has {len(paths)} official train images; an 80/20 train / val "
                                  "split needs at least 3")
        split["val"] += [[path, label, classname] for path in paths[:n_val]]
        split["train"] += [[path, label, classname] for path in paths[n_val:]]
    split["test"] = [[path, label, classname] for label, (classname, relpaths) in enumerate(test)
                     for path in sorted(relpaths)]
    return split
