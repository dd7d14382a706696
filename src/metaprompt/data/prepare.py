"""``metaprompt data prepare``: build CoOp's folder layout from the files torchvision's dataset classes
download, so a user without the CoOp folders can still run the base-to-new protocol.

torchvision's folder is linked into CoOp's (a relative symlink, else hard links, else a copy), and when
the official ``split_zhou_*.json`` is absent one is made with CoOp's recipe: per class, shuffled with a
seed, 50% train, 20% val and 30% test. Class names follow CoOp's conventions for each dataset.
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
from .check import summary
from .coop import LAYOUT_BY_NAME
from .layout import absolute, image_files, malformed, numbered_lines, require_file, subfolders
from .registry import DATASET_FOLDERS, build_dataset

TRAIN_FRACTION, VAL_FRACTION = 0.5, 0.2  # CoOp's recipe; test takes the rest
DEFAULT_SEED = 1

ClassList = list[tuple[str, list[str]]]  # per label: (class name, image paths relative to CoOp's image folder)
Log = Callable[[str], None]


@dataclass(frozen=True)
class TorchvisionSource:
    """Where a torchvision dataset class puts its files and how CoOp's layout is made from them.

    ``folder`` is torchvision's folder under the data root; each path in ``links`` under it is linked at
    the same path under CoOp's dataset folder. ``classes`` reads CoOp's dataset folder (once linked) and
    lists the images per class, for the split file; None when CoOp's layout needs no split file.
    """

    tv_class: str
    folder: str
    links: tuple[str, ...]
    classes: Callable[[Path], ClassList] | None
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


def _by_label(pairs: list[tuple[int, str]], names: list[str], source: Path) -> ClassList:
    """Group (1-based label, relpath) pairs into a class list named by ``names[label - 1]``."""
    grouped: dict[int, list[str]] = defaultdict(list)
    for label, relpath in pairs:
        if not 1 <= label <= len(names):
            raise MetapromptError(f"{source}: label {label} out of range (expected 1..{len(names)})")
        grouped[label].append(relpath)
    return [(names[label - 1], grouped[label]) for label in sorted(grouped)]


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


def _pets_classes(folder: Path) -> ClassList:
    """Images listed in ``annotations/{trainval,test}.txt``; the class name is the image name's breed,
    lower-cased (as CoOp names them)."""
    expected = "'<image id> <class id> <species> <breed id>' (e.g. 'Abyssinian_100 1 1 1')"
    breeds: dict[int, str] = {}
    pairs = []
    for list_name in ("trainval.txt", "test.txt"):
        list_file = folder / "annotations" / list_name
        for number, line in numbered_lines(list_file, f"lines {expected}"):
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                raise malformed(list_file, number, line, expected)
            label = int(parts[1])
            breeds[label] = parts[0].rsplit("_", 1)[0].lower()
            pairs.append((label, f"{parts[0]}.jpg"))
    names = [breeds.get(label, "") for label in range(1, max(breeds) + 1)]
    return _by_label(pairs, names, folder / "annotations")


def _sun_classes(folder: Path) -> ClassList:
    """Classes of ``SUN397/ClassName.txt`` (``/a/abbey``, ``/b/bakery/shop``), named as CoOp does: the
    path without its letter, words reversed (``shop bakery``)."""
    image_dir = folder / "SUN397"
    class_file = image_dir / "ClassName.txt"
    classes = []
    for number, line in numbered_lines(class_file, "lines like '/a/abbey'"):
        parts = line.strip("/").split("/")
        if len(parts) < 2:
            raise malformed(class_file, number, line, "'/<letter>/<class>[/<sub-class>]' (e.g. '/a/abbey')")
        relative = "/".join(parts)
        images = [f"{relative}/{p.name}" for p in image_files(image_dir / relative)]
        classes.append((" ".join(reversed(parts[1:])), images))
    return classes


def _cars_classes(folder: Path) -> ClassList:
    """Train and test images from the devkit's annotations; names as CoOp writes them, year first
    (``2012 Tesla Model S``)."""
    meta = folder / "devkit" / "cars_meta.mat"
    names = []
    for name in _load_mat(meta)["class_names"].ravel():
        words = str(name).split(" ")
        names.append(" ".join(words[-1:] + words[:-1]))
    pairs = []
    for annotation_file, image_dir in ((folder / "devkit" / "cars_train_annos.mat", "cars_train"),
                                       (folder / "cars_test_annos_withlabels.mat", "cars_test")):
        records = _load_mat(annotation_file)["annotations"].ravel()
        pairs += [(int(a["class"]), f"{image_dir}/{a['fname']}") for a in records]
    return _by_label(pairs, names, meta)


SOURCES: dict[str, TorchvisionSource] = {
    "eurosat": TorchvisionSource("EuroSAT", "eurosat", ("2750",),
                                 partial(_folder_classes, image_dir="2750", renamed=EUROSAT_CLASSNAMES)),
    "dtd": TorchvisionSource("DTD", "dtd/dtd", ("images",), partial(_folder_classes, image_dir="images")),
    "oxford_flowers": TorchvisionSource("Flowers102", "flowers-102", ("jpg", "imagelabels.mat", "setid.mat"),
                                        _flowers_classes, reads_mat_files=True),
    "oxford_pets": TorchvisionSource("OxfordIIITPet", "oxford-iiit-pet", ("images", "annotations"), _pets_classes),
    "food101": TorchvisionSource("Food101", "food-101", ("images",), partial(_folder_classes, image_dir="images")),
    "fgvc_aircraft": TorchvisionSource(
        "FGVCAircraft", "fgvc-aircraft-2013b/data",
        ("images", "variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt"),
        None),
    "caltech101": TorchvisionSource(
        "Caltech101", "caltech101", ("101_ObjectCategories",),
        partial(_folder_classes, image_dir="101_ObjectCategories", ignored=CALTECH_IGNORED,
                renamed=CALTECH_CLASSNAMES)),
    "sun397": TorchvisionSource("SUN397", "", ("SUN397",), _sun_classes),
    "stanford_cars": TorchvisionSource(
        "StanfordCars", "stanford_cars",
        ("cars_train", "cars_test", "devkit", "cars_test_annos_withlabels.mat"), _cars_classes,
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
    if source.classes is not None:
        _ensure_split_file(name, target, source.classes, seed, log)
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


def _ensure_split_file(name: str, target: Path, classes: Callable[[Path], ClassList], seed: int,
                       log: Log) -> None:
    split_path = target / LAYOUT_BY_NAME[name].split_file
    if split_path.exists():
        log(f"{split_path}: split file present, kept")
        return
    split = coop_recipe_split(classes(target), seed)
    split_path.write_text(json.dumps(split, indent=4) + "\n", encoding="utf-8")
    log(f"{split_path}: no official split file, so made one with CoOp's recipe "
        f"(per class {TRAIN_FRACTION:.0%} train, {VAL_FRACTION:.0%} val, the rest test; seed {seed})")


def coop_recipe_split(classes: ClassList, seed: int) -> dict[str, list[list]]:
    """CoOp's split file content: per class (label = position in ``classes``), the images shuffled
    with ``seed`` and cut into 50% train, 20% val and 30% test (rounded as CoOp does)."""
    rng = random.Random(seed)
    split: dict[str, list[list]] = {"train": [], "val": [], "test": []}
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
