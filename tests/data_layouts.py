"""Miniature copies of every dataset layout in docs/datasets.md, and of the offline world, for tests.

Each ``make_*`` function writes one dataset under ``root`` (the data root, CoOp's ``$DATA``) with the real
folder names, file names and split-file formats, a few 8x8 images per class, and returns the dataset's
folder. The layouts are written from the documented facts, independently of the readers, so a reader that
gets a folder or format wrong fails its test. ``make_tv_*`` functions write what torchvision's dataset
classes leave on disk after a download, for ``metaprompt data prepare``.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


PNG_BYTES, JPEG_BYTES = _encoded("PNG"), _encoded("JPEG")


def write_image(path: Path) -> Path:
    """A tiny valid image at ``path`` (PNG or JPEG after its suffix), creating folders as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PNG_BYTES if path.suffix.lower() == ".png" else JPEG_BYTES)
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def plant_hidden_files(folder: Path, image_name: str = "0.jpg") -> None:
    """What a Mac leaves in a copied folder: ``.DS_Store`` and an AppleDouble ``._<image>`` (not an image);
    the reference readers skip hidden files."""
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / f"._{image_name}").write_bytes(b"\x00\x05\x16\x07 AppleDouble")


# ---------------------------------------------------------------- CoOp base-to-new (split_zhou JSON)

@dataclass(frozen=True)
class CoopSpec:
    """A CoOp-JSON dataset: ``folder/split_file`` lists paths relative to ``folder/image_dir``, shaped
    like ``pattern`` (``{cls}``: the class's path token, ``{n}``: a running image number)."""

    folder: str
    image_dir: str
    split_file: str
    pattern: str
    classes: tuple[tuple[str, str], ...]  # (path token, class name as the split file gives it)

    @property
    def classnames(self) -> list[str]:
        return [name for _, name in self.classes]


COOP_DATASETS = {
    "caltech101": CoopSpec("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                           "{cls}/image_{n:04d}.jpg",
                           (("accordion", "accordion"), ("airplanes", "airplane"), ("anchor", "anchor"))),
    "oxford_pets": CoopSpec("oxford_pets", "images", "split_zhou_OxfordPets.json", "{cls}_{n}.jpg",
                            (("Abyssinian", "abyssinian"), ("american_bulldog", "american_bulldog"),
                             ("Bengal", "bengal"))),
    "stanford_cars": CoopSpec("stanford_cars", "", "split_zhou_StanfordCars.json", "cars_train/{n:05d}.jpg",
                              (("", "2000 AM General Hummer SUV"), ("", "2012 Acura RL Sedan"),
                               ("", "2012 Acura TL Sedan"))),
    "oxford_flowers": CoopSpec("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", "image_{n:05d}.jpg",
                               (("", "pink primrose"), ("", "hard-leaved pocket orchid"), ("", "canterbury bells"))),
    "food101": CoopSpec("food-101", "images", "split_zhou_Food101.json", "{cls}/{n}.jpg",
                        (("apple_pie", "apple_pie"), ("baby_back_ribs", "baby_back_ribs"), ("baklava", "baklava"))),
    "sun397": CoopSpec("sun397", "SUN397", "split_zhou_SUN397.json", "{cls}/sun_{n:04d}.jpg",
                       (("a/abbey", "abbey"), ("a/airplane_cabin", "airplane_cabin"),
                        ("b/bakery/shop", "shop bakery"))),
    "dtd": CoopSpec("dtd", "images", "split_zhou_DescribableTextures.json", "{cls}/{cls}_{n:04d}.jpg",
                    (("banded", "banded"), ("blotchy", "blotchy"), ("braided", "braided"))),
    "eurosat": CoopSpec("eurosat", "2750", "split_zhou_EuroSAT.json", "{cls}/{cls}_{n}.jpg",
                        (("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"),
                         ("HerbaceousVegetation", "Herbaceous Vegetation Land"))),
    "ucf101": CoopSpec("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "{cls}/v_{cls}_g01_c{n:02d}.jpg",
                       (("Apply_Eye_Makeup", "Apply_Eye_Makeup"), ("Archery", "Archery"),
                        ("Baby_Crawling", "Baby_Crawling"))),
}
SPLIT_SIZES = {"train": 3, "val": 2, "test": 2}  # images per class in each split of a miniature dataset


def make_coop_dataset(root: Path, name: str) -> Path:
    """CoOp's folder for dataset ``name`` (a key of ``COOP_DATASETS``): images plus ``split_zhou_*.json``
    with ``SPLIT_SIZES`` images per class and split."""
    spec = COOP_DATASETS[name]
    folder = root / spec.folder
    split: dict[str, list] = {key: [] for key in SPLIT_SIZES}
    n = 0
    for label, (token, classname) in enumerate(spec.classes):
        for key, size in SPLIT_SIZES.items():
            for _ in range(size):
                n += 1
                relpath = spec.pattern.format(cls=token, n=n)
                write_image(folder / spec.image_dir / relpath)
                split[key].append([relpath, label, classname])
    (folder / spec.split_file).write_text(json.dumps(split, indent=4))
    return folder


FGVC_VARIANTS = ("707-320", "727-200", "A300B4")


def make_fgvc_aircraft(root: Path) -> Path:
    """``fgvc_aircraft/`` as CoOp expects it: images/<id>.jpg, variants.txt, images_variant_<split>.txt."""
    folder = root / "fgvc_aircraft"
    write_lines(folder / "variants.txt", list(FGVC_VARIANTS))
    image_id = 1000000
    for split, size in SPLIT_SIZES.items():
        lines = []
        for variant in FGVC_VARIANTS:
            for _ in range(size):
                image_id += 1
                write_image(folder / "images" / f"{image_id}.jpg")
                lines.append(f"{image_id} {variant}")
        write_lines(folder / f"images_variant_{split}.txt", lines)
    return folder


# ---------------------------------------------------------------- ImageNet and its variants

IMAGENET_CLASSES = (("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"))
"""In wnid order: the labels CoOp gives (sorted wnid folders)."""


def _write_classnames(folder: Path) -> None:
    """classnames.txt with its lines NOT in wnid order: labels must come from the sorted folders."""
    lines = [f"{wnid} {name}" for wnid, name in IMAGENET_CLASSES]
    write_lines(folder / "classnames.txt", [lines[1], lines[2], lines[0]])


def make_imagenet(root: Path, unsplit_val: bool = False) -> Path:
    """``imagenet/`` with images/train/<wnid>/ (3 per class), images/val/<wnid>/ (2 per class) and
    classnames.txt; ``unsplit_val`` leaves the val images loose in images/val, as distributed."""
    folder = root / "imagenet"
    _write_classnames(folder)
    number = 0
    for wnid, _ in IMAGENET_CLASSES:
        for i in range(3):
            write_image(folder / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
        plant_hidden_files(folder / "images" / "train" / wnid, f"{wnid}_0.JPEG")
        for _ in range(2):
            number += 1
            val_dir = folder / "images" / "val" / ("" if unsplit_val else wnid)
            write_image(val_dir / f"ILSVRC2012_val_{number:08d}.JPEG")
    return folder


# variant name -> (dataset folder, image folder)
IMAGENET_VARIANTS = {
    "imagenetv2": ("imagenetv2", "imagenetv2-matched-frequency-format-val"),
    "imagenet_sketch": ("imagenet-sketch", "images"),
    "imagenet_a": ("imagenet-adversarial", "imagenet-a"),
    "imagenet_r": ("imagenet-rendition", "imagenet-r"),
}
SUBSET_WNIDS = ("n01443537", "n01484850")  # the classes the miniature ImageNet-A / -R cover


def make_imagenet_variant(root: Path, name: str) -> Path:
    """One ImageNet variant (a key of ``IMAGENET_VARIANTS``) with its classnames.txt: V2 has folders
    0..n-1, Sketch one folder per wnid, A and R only the ``SUBSET_WNIDS`` folders (plus a README)."""
    folder_name, image_dir = IMAGENET_VARIANTS[name]
    folder = root / folder_name
    _write_classnames(folder)
    if name == "imagenetv2":
        for label in range(len(IMAGENET_CLASSES)):
            for i in range(2):
                write_image(folder / image_dir / str(label) / f"{label:03d}{i}abc.jpeg")
        return folder
    wnids = [w for w, _ in IMAGENET_CLASSES] if name == "imagenet_sketch" else list(SUBSET_WNIDS)
    for wnid in wnids:
        for i in range(2):
            write_image(folder / image_dir / wnid / f"{i}.jpg")
    if name != "imagenet_sketch":
        (folder / image_dir / "README.txt").write_text("not a class\n")
    return folder


# ---------------------------------------------------------------- domain generalisation (Dassl)

PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_CLASSES = ("dog", "elephant", "giraffe")
PACS_BROKEN = "sketch/dog/n02103406_4068-1.png"


def make_pacs(root: Path) -> Path:
    """``pacs/`` with images/<domain>/<class>/ (3 per class) and splits/<domain>_{train,crossval,test}_kfold.txt
    (2, 1 and all 3 per class; 1-based labels). The sketch train list also names the known broken file,
    which is absent, as in the official lists."""
    folder = root / "pacs"
    for domain in PACS_DOMAINS:
        suffix = ".png" if domain == "sketch" else ".jpg"
        lists: dict[str, list[str]] = {"train": [], "crossval": [], "test": []}
        for label, cls in enumerate(PACS_CLASSES, start=1):
            for i in range(3):
                relpath = f"{domain}/{cls}/pic_{i:03d}{suffix}"
                write_image(folder / "images" / relpath)
                lists["train" if i < 2 else "crossval"].append(f"{relpath} {label}")
                lists["test"].append(f"{relpath} {label}")
        if domain == "sketch":
            lists["train"].append(f"{PACS_BROKEN} 1")
        for split, lines in lists.items():
            write_lines(folder / "splits" / f"{domain}_{split}_kfold.txt", lines)
    return folder


VLCS_DOMAINS = ("caltech", "labelme", "pascal", "sun")
VLCS_CLASSES = ("bird", "car", "chair", "dog", "person")
"""The names the released reader gives Dassl's numbered class folders 0..4."""


def make_vlcs(root: Path, upper_case_domains: bool = True, folder_name: str = "VLCS") -> Path:
    """``VLCS/<DOMAIN>/{train,crossval,test}/<0..4>/*.jpg``: class folders numbered, as Dassl's download has
    them, domain folders in capitals unless ``upper_case_domains`` is False; 2 / 1 / 2 images per class,
    and a Mac's hidden files in one folder."""
    folder = root / folder_name
    for domain in VLCS_DOMAINS:
        domain_dir = folder / (domain.upper() if upper_case_domains else domain)
        for split, size in (("train", 2), ("crossval", 1), ("test", 2)):
            for label in range(len(VLCS_CLASSES)):
                for i in range(size):
                    write_image(domain_dir / split / str(label) / f"{i}.jpg")
    plant_hidden_files(folder / VLCS_DOMAINS[0].upper() if upper_case_domains else folder / VLCS_DOMAINS[0])
    plant_hidden_files(domain_dir / "train" / "0")
    return folder


OFFICE_HOME_DOMAINS = ("art", "clipart", "product", "real_world")
OFFICE_HOME_CLASSES = ("Alarm_Clock", "Backpack", "Batteries")


def make_office_home(root: Path, folder_name: str = "office_home_dg") -> Path:
    """``office_home_dg/<domain>/{train,val}/<Class>/*.jpg``, 2 / 1 images per class, and a Mac's hidden
    files in one class folder."""
    folder = root / folder_name
    for domain in OFFICE_HOME_DOMAINS:
        for split, size in (("train", 2), ("val", 1)):
            for cls in OFFICE_HOME_CLASSES:
                for i in range(size):
                    write_image(folder / domain / split / cls / f"{i:05d}.jpg")
    plant_hidden_files(folder / OFFICE_HOME_DOMAINS[0] / "train" / OFFICE_HOME_CLASSES[0], "00000.jpg")
    return folder


DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DOMAINNET_CLASSES = ("aircraft_carrier", "airplane", "alarm_clock")


def _make_domainnet_style(folder: Path, domains: tuple[str, ...], classes: tuple[str, ...], suffix: str,
                          train: int = 2, test: int = 1, fewer: dict[tuple[str, str], int] | None = None,
                          list_dir: str = "splits") -> Path:
    """``fewer`` gives some (domain, class) fewer train images than ``train``."""
    for domain in domains:
        lists: dict[str, list[str]] = {"train": [], "test": []}
        for label, cls in enumerate(classes):
            n_train = (fewer or {}).get((domain, cls), train)
            for i in range(n_train + test):
                relpath = f"{domain}/{cls}/{domain}_{label:03d}_{i:06d}{suffix}"
                write_image(folder / relpath)
                lists["train" if i < n_train else "test"].append(f"{relpath} {label}")
        for split, lines in lists.items():
            write_lines(folder / list_dir / f"{domain}_{split}.txt", lines)
    return folder


DOMAINNET_SMALL_CLASS = ("painting", "alarm_clock")
"""A class with a single training image in one domain (the real painting_train.txt even lacks a class)."""


def make_domainnet(root: Path, list_dir: str = "splits") -> Path:
    """``domainnet/<domain>/<class>/*.jpg`` and splits/<domain>_{train,test}.txt (0-based labels),
    2 / 1 images per class but one train image for ``DOMAINNET_SMALL_CLASS``; ``list_dir=""`` puts the
    lists beside the domain folders, as the dataset's download does."""
    return _make_domainnet_style(root / "domainnet", DOMAINNET_DOMAINS, DOMAINNET_CLASSES, ".jpg",
                                 fewer={DOMAINNET_SMALL_CLASS: 1}, list_dir=list_dir)


# ---------------------------------------------------------------- the offline world

WORLD_DOMAINS = ("photo", "cartoon", "sketch", "painting")
WORLD_CLASSES = ("red_star", "blue_circle", "green_square", "yellow_triangle")


def make_world(root: Path) -> Path:
    """``world/``: DomainNet-style <domain>/<class_folder>/*.png with splits/<domain>_{train,test}.txt
    (3 / 2 images per class), and split_zhou_World.json (paths relative to world/) splitting the photo
    domain per class into 2 train, 1 val, 2 test, classes named by their folders (as the render names them)."""
    folder = _make_domainnet_style(root / "world", WORLD_DOMAINS, WORLD_CLASSES, ".png", train=3, test=2)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, cls in enumerate(WORLD_CLASSES):
        for i in range(5):
            key = "train" if i < 2 else "val" if i == 2 else "test"
            split[key].append([f"photo/{cls}/photo_{label:03d}_{i:06d}.png", label, cls])
    (folder / "split_zhou_World.json").write_text(json.dumps(split, indent=4))
    return folder


OWN_DOMAINS = ("photo", "sketch")
OWN_CLASSES = ("circle", "square", "triangle")


def make_own_dataset(root: Path, folder_name: str = "shapes") -> Path:
    """A researcher's own data with domains, as a dataset descriptor names it (docs/extending.md):
    ``shapes/<domain>/{train,val,test}/<class>/*.jpg``, 2 / 1 / 2 images per class."""
    folder = root / folder_name
    for domain in OWN_DOMAINS:
        for split, size in (("train", 2), ("val", 1), ("test", 2)):
            for cls in OWN_CLASSES:
                for i in range(size):
                    write_image(folder / domain / split / cls / f"{i}.jpg")
    return folder


def make_all(root: Path, world: bool = True) -> Path:
    """Every layout above under ``root`` (the world's only with ``world``); returns ``root``."""
    for name in COOP_DATASETS:
        make_coop_dataset(root, name)
    make_fgvc_aircraft(root)
    make_imagenet(root)
    for name in IMAGENET_VARIANTS:
        make_imagenet_variant(root, name)
    for make in (make_pacs, make_vlcs, make_office_home, make_domainnet, make_own_dataset,
                 *([make_world] if world else [])):
        make(root)
    return root


# ---------------------------------------------------------------- torchvision downloads

def make_tv_eurosat(root: Path, classes: tuple[str, ...] = ("AnnualCrop", "Forest", "SeaLake"),
                    per_class: int = 5) -> Path:
    """torchvision's EuroSAT: ``eurosat/2750/<Class>/<Class>_<i>.jpg``."""
    folder = root / "eurosat"
    for cls in classes:
        for i in range(1, per_class + 1):
            write_image(folder / "2750" / cls / f"{cls}_{i}.jpg")
    return folder


def make_tv_dtd(root: Path, classes: tuple[str, ...] = ("banded", "blotchy", "braided"), per_class: int = 5) -> Path:
    """torchvision's DTD: ``dtd/dtd/images/<class>/*.jpg`` and ``dtd/dtd/labels/{train,val,test}1.txt``."""
    folder = root / "dtd" / "dtd"
    names = [f"{cls}/{cls}_{i:04d}.jpg" for cls in classes for i in range(1, per_class + 1)]
    for name in names:
        write_image(folder / "images" / name)
    for split in ("train", "val", "test"):
        write_lines(folder / "labels" / f"{split}1.txt", names)
    return folder


def make_tv_flowers102(root: Path, labels: tuple[int, ...] = (1,) * 5 + (2,) * 5 + (3,) * 5) -> Path:
    """torchvision's Flowers102: ``flowers-102/jpg/image_<n>.jpg``, imagelabels.mat (1-based label of
    image n) and setid.mat."""
    import numpy as np
    from scipy.io import savemat

    folder = root / "flowers-102"
    for n in range(1, len(labels) + 1):
        write_image(folder / "jpg" / f"image_{n:05d}.jpg")
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    ids = np.arange(1, len(labels) + 1)
    savemat(folder / "setid.mat", {"trnid": ids[0::3], "valid": ids[1::3], "tstid": ids[2::3]})
    return folder


def make_tv_oxford_pets(root: Path, breeds: tuple[str, ...] = ("Abyssinian", "american_bulldog", "Bengal"),
                        per_class: int = 5) -> Path:
    """torchvision's OxfordIIITPet: ``oxford-iiit-pet/images/<Breed>_<i>.jpg`` and
    annotations/{trainval,test}.txt lines ``<image id> <class id> <species> <breed id>``."""
    folder = root / "oxford-iiit-pet"
    lists: dict[str, list[str]] = {"trainval": [], "test": []}
    for label, breed in enumerate(breeds, start=1):
        species = 1 if breed[0].isupper() else 2
        for i in range(1, per_class + 1):
            write_image(folder / "images" / f"{breed}_{i}.jpg")
            lists["trainval" if i <= 3 else "test"].append(f"{breed}_{i} {label} {species} {label}")
    for split, lines in lists.items():
        write_lines(folder / "annotations" / f"{split}.txt", lines)
    return folder


def make_tv_food101(root: Path, classes: tuple[str, ...] = ("apple_pie", "baklava", "tacos"),
                    per_class: int = 5) -> Path:
    """torchvision's Food101: ``food-101/images/<class>/<id>.jpg`` and meta/."""
    folder = root / "food-101"
    for cls in classes:
        for i in range(per_class):
            write_image(folder / "images" / cls / f"{1000 + i}.jpg")
    write_lines(folder / "meta" / "classes.txt", list(classes))
    return folder


def make_tv_fgvc_aircraft(root: Path) -> Path:
    """torchvision's FGVCAircraft: ``fgvc-aircraft-2013b/data/`` holding images/, variants.txt and
    images_variant_{train,val,test}.txt."""
    make_fgvc_aircraft(root)
    data = root / "fgvc-aircraft-2013b" / "data"
    data.parent.mkdir(parents=True)
    (root / "fgvc_aircraft").rename(data)
    return data


def make_tv_caltech101(root: Path, per_class: int = 5) -> Path:
    """torchvision's Caltech101: ``caltech101/101_ObjectCategories/<class>/image_<i>.jpg``, including the
    BACKGROUND_Google and Faces_easy folders CoOp leaves out."""
    folder = root / "caltech101" / "101_ObjectCategories"
    for cls in ("BACKGROUND_Google", "Faces", "Faces_easy", "accordion", "airplanes"):
        for i in range(1, per_class + 1):
            write_image(folder / cls / f"image_{i:04d}.jpg")
    return folder.parent


def make_tv_sun397(root: Path, per_class: int = 5, partitions: bool = True) -> Path:
    """torchvision's SUN397: ``SUN397/ClassName.txt`` and ``SUN397/<letter>/<class>[/<sub>]/sun_*.jpg``, and
    (``partitions``) the first official partition from Partitions.zip, ``Training_01.txt`` / ``Testing_01.txt``
    (3 / the rest of each class's images), placed beside ClassName.txt."""
    folder = root / "SUN397"
    classes = ("/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop")
    write_lines(folder / "ClassName.txt", list(classes))
    lists: dict[str, list[str]] = {"Training_01.txt": [], "Testing_01.txt": []}
    for index, cls in enumerate(classes):
        for i in range(per_class):
            image = f"{cls}/sun_{index}{i:03d}abc.jpg"
            write_image(folder / image.strip("/"))
            lists["Training_01.txt" if i < 3 else "Testing_01.txt"].append(image)
    if partitions:
        for name, lines in lists.items():
            write_lines(folder / name, lines)
    return folder


CARS_CLASSES = ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012")


def make_tv_stanford_cars(root: Path, per_class: int = 5) -> Path:
    """torchvision's StanfordCars: ``stanford_cars/`` with cars_train/, cars_test/, devkit/cars_meta.mat,
    devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (1-based classes)."""
    import numpy as np
    from scipy.io import savemat

    folder = root / "stanford_cars"
    record = np.dtype([("fname", object), ("class", np.uint8)])
    annotations: dict[str, list] = {"cars_train": [], "cars_test": []}
    for label in range(1, len(CARS_CLASSES) + 1):
        for i in range(per_class):
            image_dir = "cars_train" if i < 3 else "cars_test"
            fname = f"{label:02d}{i:03d}.jpg"
            write_image(folder / image_dir / fname)
            annotations[image_dir].append((fname, label))
    (folder / "devkit").mkdir()
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": np.array([list(CARS_CLASSES)], dtype=object)})
    savemat(folder / "devkit" / "cars_train_annos.mat",
            {"annotations": np.array([annotations["cars_train"]], dtype=record)})
    savemat(folder / "cars_test_annos_withlabels.mat",
            {"annotations": np.array([annotations["cars_test"]], dtype=record)})
    return folder
