"""The few-shot sets the reference readers draw, on miniature layouts this worker writes (one repository per
process, as for the other workers).

- ``coop``: CoOp's ``OxfordPets.read_split`` on a split_zhou JSON whose classes first appear out of label
  order, then Dassl's ``generate_fewshot_dataset`` for train (4 shots; one class has fewer) and val
  (min(4, shots)), after ``random.seed(seed)``, for seeds 1, 2, 3: what CoOp's dataset classes do.
- ``dg``: the released MetaPrompt readers PACSFS, VLCSFS, OfficeHomeFS and DomainNetFS (datasets/*.py) at
  2 shots per class per source domain, for every target and seeds 1, 2, 3, on layouts where one class has a
  single image in one source domain and list files do not list classes in label order.

The images are empty files (no reader opens them). VLCS and OfficeHome list their images with ``glob``, in the
file system's order: the golden records the order glob gave each folder here, so that a test can list in the
same order elsewhere.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import reference_env as env  # noqa: E402

SEEDS = (1, 2, 3)
COOP_SHOTS, DG_SHOTS = 4, 2


def coop_split() -> dict:
    """A split_zhou JSON: 5 classes whose items are interleaved and first appear in the order 3, 0, 4, 1, 2;
    class 1 has 3 train images (fewer than 4 shots)."""
    sizes = {3: 9, 0: 6, 4: 7, 1: 3, 2: 8}
    queues = {label: [f"class_{label}/img_{label}_{i:02d}.jpg" for i in range(n)] for label, n in sizes.items()}
    train = []
    while any(queues.values()):
        for label in sizes:
            if queues[label]:
                train.append([queues[label].pop(0), label, f"name_{label}"])
    val = [[f"class_{label}/val_{label}_{i}.jpg", label, f"name_{label}"] for label in (2, 0, 1, 3, 4) for i in range(5)]
    test = [[f"class_{label}/test_{label}_{i}.jpg", label, f"name_{label}"] for label in range(5) for i in range(2)]
    return {"train": train, "val": val, "test": test}


def coop_draws(repo: Path, dassl: Path) -> dict:
    env.enter_repository(repo, dassl)
    from dassl.data.datasets import DatasetBase

    from datasets.oxford_pets import OxfordPets

    split = coop_split()
    reader = object.__new__(DatasetBase)
    draws = {}
    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "images"
        for relpath, _, _ in (entry for key in ("train", "val", "test") for entry in split[key]):
            (images / relpath).parent.mkdir(parents=True, exist_ok=True)
            (images / relpath).touch()  # Dassl's Datum checks that the file exists
        path = Path(folder) / "split_zhou_Fake.json"
        path.write_text(json.dumps(split))
        train, val, _ = OxfordPets.read_split(str(path), str(images))
        for seed in SEEDS:
            random.seed(seed)  # Dassl's set_random_seed, before the dataset is built
            drawn_train = reader.generate_fewshot_dataset(train, num_shots=COOP_SHOTS)
            drawn_val = reader.generate_fewshot_dataset(val, num_shots=min(COOP_SHOTS, 4))
            draws[str(seed)] = {"train": [os.path.relpath(d.impath, images) for d in drawn_train],
                                "val": [os.path.relpath(d.impath, images) for d in drawn_val]}
    return {"split": split, "shots": COOP_SHOTS, "draws": draws}


# ------------------------------------------------------------------------------------ DG layouts

PACS_DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
DOMAINNET_DOMAINS = ["clipart", "infograph", "painting", "quickdraw", "real", "sketch"]
FOUR_DOMAINS = {"vlcs": ["caltech", "labelme", "pascal", "sun"], "office_home": ["art", "clipart", "product", "real_world"]}
CLASSES = ["dog", "elephant", "house"]


def _count(domain: str, label: int, split: str) -> int:
    """Images per class: 4 train / 3 val or test, but one class of each dataset's second domain has 1 train."""
    if split == "train":
        return 1 if (domain in ("cartoon", "infograph", "labelme", "clipart") and label == 1) else 4
    return 3


def _list_lines(domain: str, split: str, first_label: int, order: list[int]) -> list[str]:
    return [f"{domain}/{CLASSES[label]}/{split}_{label}_{i}.jpg {label + first_label}"
            for i in range(max(_count(domain, lbl, split) for lbl in order)) for label in order
            if i < _count(domain, label, split)]


def write_layouts(root: Path) -> dict[str, dict]:
    """Write the four miniature DG datasets under ``root``; return, per dataset, its files, its list files
    and (VLCS, OfficeHome) the order glob lists each class folder in."""
    layouts = {}
    pacs = root / "pacs"
    lists = {f"splits/{d}_{s}_kfold.txt": _list_lines(d, s, 1, [2, 0, 1]) for d in PACS_DOMAINS
             for s in ("train", "crossval", "test")}
    layouts["pacs"] = _write_lists(pacs, lists, image_prefix="images")
    domainnet = root / "domainnet"
    lists = {f"splits/{d}_{s}.txt": _list_lines(d, s, 0, [1, 2, 0]) for d in DOMAINNET_DOMAINS for s in ("train", "test")}
    layouts["domainnet"] = _write_lists(domainnet, lists, image_prefix="")
    for name, domains in FOUR_DOMAINS.items():
        folder = root / name
        splits = ("train", "crossval", "test") if name == "vlcs" else ("train", "val")
        files = []
        for domain in domains:
            domain_dir = domain.upper() if name == "vlcs" else domain
            for split in splits:
                for label, cls in enumerate(CLASSES):
                    class_dir = str(label) if name == "vlcs" else cls.capitalize()
                    for i in reversed(range(_count(domain, label, "train" if split == "train" else "val"))):
                        files.append(f"{domain_dir}/{split}/{class_dir}/{i:03d}_{cls}.jpg")
        for relpath in files:
            (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
            (folder / relpath).touch()
        listed = {os.path.dirname(f): [os.path.basename(p) for p in glob.glob(str(folder / os.path.dirname(f) / "*.jpg"))]
                  for f in files}
        layouts[name] = {"files": files, "lists": {}, "listed": listed}
    return layouts


def _write_lists(folder: Path, lists: dict[str, list[str]], image_prefix: str) -> dict:
    files = sorted({os.path.join(image_prefix, line.rsplit(" ", 1)[0]) for lines in lists.values() for line in lines})
    for relpath in files:
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).touch()
    for relpath, lines in lists.items():
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_text("".join(f"{line}\n" for line in lines))
    return {"files": files, "lists": lists, "listed": {}}


READERS = {"pacs": ("PACSFS", PACS_DOMAINS), "vlcs": ("VLCSFS", FOUR_DOMAINS["vlcs"]),
           "office_home": ("OfficeHomeFS", FOUR_DOMAINS["office_home"]), "domainnet": ("DomainNetFS", DOMAINNET_DOMAINS)}


def dg_draws(repo: Path, dassl: Path) -> dict:
    train_module = env.enter_repository(repo, dassl)
    from dassl.data.datasets import DATASET_REGISTRY

    out = {}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        layouts = write_layouts(root)
        for name, (reader, domains) in READERS.items():
            draws = {}
            for target_id, target in enumerate(domains):
                for seed in SEEDS:
                    sources = [d for d in domains if d != target]
                    cfg = env.config(train_module, repo / "configs/trainers/Meta_DG/vit_b16.yaml", DATASET__ROOT=str(root),
                                     DATASET__NAME=reader, DATASET__NUM_SHOTS=DG_SHOTS, DATASET__ID=target_id, SEED=seed,
                                     DATASET__SOURCE_DOMAINS=sources, DATASET__TARGET_DOMAINS=[target])
                    random.seed(seed)
                    dataset = DATASET_REGISTRY.get(reader)(cfg)
                    base = dataset.dataset_dir
                    draws[f"{target}/{seed}"] = {
                        split: [[os.path.relpath(d.impath, base), d.label, d.domain, d.classname] for d in items]
                        for split, items in (("train", dataset.train_x), ("val", dataset.val))}
            out[name] = {**layouts[name], "shots": DG_SHOTS, "draws": draws}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("coop", "dg"))
    parser.add_argument("--repo", type=Path, required=True, help="CoOp (coop) or 2024-TIP-MetaPrompt (dg)")
    parser.add_argument("--dassl", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = coop_draws(args.repo, args.dassl) if args.part == "coop" else dg_draws(args.repo, args.dassl)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
