"""Every registered reader on a miniature copy of its real on-disk layout."""
from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import pytest

from data_layouts import (COOP_DATASETS, DOMAINNET_DOMAINS, FGVC_VARIANTS, IMAGENET_CLASSES, OFFICE_HOME_DOMAINS,
                          PACS_BROKEN, PACS_DOMAINS, SPLIT_SIZES, SUBSET_WNIDS, VLCS_DOMAINS, WORLD_DOMAINS,
                          make_all, make_coop_dataset, make_domainnet, make_imagenet, make_office_home, make_pacs,
                          make_vlcs, write_image, write_lines)
from metaprompt.data import DATASETS, DatasetSplits, build_dataset
from metaprompt.data.registry import DATASET_FOLDERS, known_datasets
from metaprompt.errors import MetapromptError
from metaprompt.templates import IMAGENET_FAMILY, METAPROMPT, ZERO_SHOT

EXPECTED_NAMES = {
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft",
    "sun397", "dtd", "eurosat", "ucf101", "imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r",
    "pacs", "vlcs", "office_home", "domainnet", "world", "world_dg",
}
IMAGENET_NAMES = [name for _, name in IMAGENET_CLASSES]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_all(tmp_path_factory.mktemp("data"))


def _check_consistent(splits: DatasetSplits) -> None:
    """Labels index classnames, every path is absolute and exists, DG items name a listed domain."""
    for item in splits.train + splits.val + splits.test:
        assert splits.classnames[item.label] == item.classname
        assert os.path.isabs(item.impath) and os.path.isfile(item.impath)
        assert (item.domain in splits.domains) if splits.domains else item.domain == ""
    known = {*ZERO_SHOT, *METAPROMPT, *IMAGENET_FAMILY}
    assert splits.template in known and (splits.template in IMAGENET_FAMILY) == (splits.name in IMAGENET_FAMILY)


def test_every_expected_dataset_is_registered_with_a_folder():
    assert EXPECTED_NAMES <= set(DATASETS)
    assert EXPECTED_NAMES == set(known_datasets())
    assert DATASET_FOLDERS["food101"] == ("food-101",)
    assert DATASET_FOLDERS["vlcs"] == ("VLCS", "vlcs")  # Dassl's name, then the released MetaPrompt code's
    assert DATASET_FOLDERS["office_home"] == ("office_home_dg", "office_home")


@pytest.mark.parametrize("name", sorted(COOP_DATASETS))
def test_coop_json_reader(root, name):
    splits = build_dataset(name, root)
    _check_consistent(splits)
    assert splits.name == name
    assert splits.classnames == COOP_DATASETS[name].classnames
    n = len(splits.classnames)
    assert [len(splits.train), len(splits.val), len(splits.test)] == [n * SPLIT_SIZES[k] for k in SPLIT_SIZES]
    assert [d.label for d in splits.train] == sorted(d.label for d in splits.train)
    image_dir = root / COOP_DATASETS[name].folder / COOP_DATASETS[name].image_dir
    assert all(Path(d.impath).is_relative_to(image_dir) for d in splits.test)


def test_templates_follow_the_dataset(root):
    assert build_dataset("eurosat", root).template == "eurosat"
    assert build_dataset("caltech101", root).template == "default"
    assert build_dataset("imagenet_r", root).template == "imagenet_r"
    assert build_dataset("world", root).template == "default"


def test_fgvc_aircraft_uses_variants_order(root):
    splits = build_dataset("fgvc_aircraft", root)
    _check_consistent(splits)
    assert splits.classnames == list(FGVC_VARIANTS)
    assert len(splits.train) == len(FGVC_VARIANTS) * SPLIT_SIZES["train"]
    assert splits.test[0].impath.endswith(".jpg") and "/fgvc_aircraft/images/" in splits.test[0].impath


def test_imagenet_test_is_val_folder_and_doubles_as_val(root):
    """Labels follow the sorted wnid folders, names come from classnames.txt by wnid (its lines are not in
    wnid order here), hidden files are skipped, and val is the test set, not drawn from."""
    splits = build_dataset("imagenet", root)
    _check_consistent(splits)
    assert splits.classnames == IMAGENET_NAMES and splits.draw_val is False
    assert len(splits.train) == 9 and len(splits.test) == 6
    assert splits.val == splits.test
    assert all("/images/val/" in d.impath for d in splits.test)
    assert {Path(d.impath).parent.name for d in splits.test if d.label == 2} == {"n01484850"}


@pytest.mark.parametrize("name", ["imagenetv2", "imagenet_sketch"])
def test_imagenet_variants_with_all_classes(root, name):
    """ImageNet-Sketch labels follow the sorted wnid folders; ImageNetV2's folders are numbered and CoOp's reader
    names folder i after the i-th line of classnames.txt (in wnid order in the official file, not here)."""
    splits = build_dataset(name, root)
    _check_consistent(splits)
    in_file_order = [line.split(" ", 1)[1] for line in (root / "imagenetv2" / "classnames.txt").read_text().splitlines()]
    assert in_file_order != IMAGENET_NAMES
    assert splits.classnames == (in_file_order if name == "imagenetv2" else IMAGENET_NAMES)
    assert splits.train == [] and splits.val == [] and len(splits.test) == 6


@pytest.mark.parametrize("name", ["imagenet_a", "imagenet_r"])
def test_imagenet_a_and_r_cover_their_own_classes(root, name):
    splits = build_dataset(name, root)
    _check_consistent(splits)
    names = dict(IMAGENET_CLASSES)
    assert splits.classnames == [names[w] for w in SUBSET_WNIDS]
    assert {(Path(d.impath).parent.name, d.label) for d in splits.test} == {(w, i) for i, w in enumerate(SUBSET_WNIDS)}


def test_pacs_labels_from_one_and_skips_broken_file(root):
    splits = build_dataset("pacs", root)
    _check_consistent(splits)
    assert splits.domains == list(PACS_DOMAINS)
    assert splits.classnames == ["dog", "elephant", "giraffe"]
    assert not any(d.impath.endswith(PACS_BROKEN) for d in splits.train)
    per_domain = {dom: sum(d.domain == dom for d in splits.train) for dom in PACS_DOMAINS}
    assert per_domain == {dom: 6 for dom in PACS_DOMAINS}
    assert len(splits.val) == 12 and len(splits.test) == 36
    elephant = next(d for d in splits.train if "/elephant/" in d.impath)
    assert elephant.label == 1


@pytest.mark.parametrize("upper", [True, False])
def test_vlcs_accepts_either_case_of_domain_folders(tmp_path, upper):
    make_vlcs(tmp_path, upper_case_domains=upper)
    splits = build_dataset("vlcs", tmp_path)
    _check_consistent(splits)
    assert splits.domains == list(VLCS_DOMAINS)
    assert splits.classnames == ["bird", "car", "chair", "dog", "person"]  # its numbered folders, as released
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 20, 40)  # hidden files skipped
    assert all("/crossval/" in d.impath for d in splits.val)


def test_vlcs_and_office_home_under_the_released_metaprompt_folder_names(tmp_path):
    make_vlcs(tmp_path, folder_name="vlcs")
    make_office_home(tmp_path, folder_name="office_home")
    assert len(build_dataset("vlcs", tmp_path).train) == 40
    assert len(build_dataset("office_home", tmp_path).train) == 24


def test_class_folder_images_are_in_listed_order_as_glob_takes_them(tmp_path):
    """VLCS and OfficeHome: the reference readers take glob('*.jpg') order, the file system's."""
    folder = make_vlcs(tmp_path)
    many = folder / "CALTECH" / "train" / "0"
    for i in range(20):
        write_image(many / f"extra_{(i * 7) % 20:02d}.jpg")
    expected = glob.glob(str(many / "*.jpg"))
    read = [d.impath for d in build_dataset("vlcs", tmp_path).train if d.domain == "caltech" and d.label == 0]
    assert read == expected


def test_office_home_lower_cases_class_names_and_tests_on_everything(root):
    splits = build_dataset("office_home", root)
    _check_consistent(splits)
    assert splits.domains == list(OFFICE_HOME_DOMAINS)
    assert splits.classnames == ["alarm_clock", "backpack", "batteries"]  # Dassl's: folder names lower-cased
    assert sorted(d.impath for d in splits.test) == sorted(d.impath for d in splits.train + splits.val)


def test_domainnet_reads_list_files(root):
    splits = build_dataset("domainnet", root)
    _check_consistent(splits)
    assert splits.domains == list(DOMAINNET_DOMAINS)
    assert splits.classnames == ["aircraft_carrier", "airplane", "alarm_clock"]  # the class folders, as released
    assert (len(splits.train), len(splits.val), len(splits.test)) == (35, 0, 18)  # painting/alarm_clock: 1 image
    assert {d.domain for d in splits.test} == set(DOMAINNET_DOMAINS)


def test_domainnet_lists_beside_the_domain_folders_as_downloaded(tmp_path):
    make_domainnet(tmp_path, list_dir="")
    assert len(build_dataset("domainnet", tmp_path).train) == 35


def test_world_readers_share_one_folder(root):
    b2n, dg = build_dataset("world", root), build_dataset("world_dg", root)
    for splits in (b2n, dg):
        _check_consistent(splits)
    assert b2n.classnames == dg.classnames == ["red_star", "blue_circle", "green_square", "yellow_triangle"]
    assert b2n.domains == [] and dg.domains == list(WORLD_DOMAINS)
    assert (len(b2n.train), len(b2n.val), len(b2n.test)) == (8, 4, 8)
    assert (len(dg.train), len(dg.val), len(dg.test)) == (48, 0, 32)


def test_paths_stay_absolute_for_a_relative_root(root, monkeypatch):
    monkeypatch.chdir(root.parent)
    splits = build_dataset("dtd", root.name)
    assert all(os.path.isabs(d.impath) for d in splits.train)


# ---------------------------------------------------------------- errors name the file and what was expected

def test_missing_image_names_split_file_entry_and_path(tmp_path):
    folder = make_coop_dataset(tmp_path, "dtd")
    missing = folder / "images" / "blotchy" / "blotchy_0008.jpg"
    missing.unlink()
    with pytest.raises(MetapromptError) as err:
        build_dataset("dtd", tmp_path)
    message = str(err.value)
    assert "split_zhou_DescribableTextures.json" in message and str(missing) in message
    assert "'train' entry" in message and "\n" not in message


def test_malformed_list_line_names_file_line_and_format(tmp_path):
    folder = make_pacs(tmp_path)
    list_file = folder / "splits" / "cartoon_crossval_kfold.txt"
    lines = list_file.read_text().splitlines()
    write_lines(list_file, lines[:1] + ["cartoon/dog/pic_002.jpg dog"] + lines[1:])
    with pytest.raises(MetapromptError) as err:
        build_dataset("pacs", tmp_path)
    message = str(err.value)
    assert str(list_file) in message and "line 2" in message and "'cartoon/dog/pic_002.jpg dog'" in message
    assert "<relpath> <label>" in message


def test_malformed_json_entry_names_entry_and_format(tmp_path):
    folder = make_coop_dataset(tmp_path, "food101")
    split_file = folder / "split_zhou_Food101.json"
    content = json.loads(split_file.read_text())
    content["test"][1] = ["apple_pie/6.jpg", "0", "apple_pie"]
    split_file.write_text(json.dumps(content))
    expected = r"Food101\.json: 'test' entry 2 is .*; expected \[relpath, label, classname\]"
    with pytest.raises(MetapromptError, match=expected):
        build_dataset("food101", tmp_path)
    split_file.write_text(json.dumps({"train": []}))
    with pytest.raises(MetapromptError, match=r"found keys \['train'\]"):
        build_dataset("food101", tmp_path)


def test_missing_image_in_list_file_names_line(tmp_path):
    folder = make_pacs(tmp_path)
    (folder / "images" / "photo" / "giraffe" / "pic_001.jpg").unlink()
    with pytest.raises(MetapromptError, match=r"photo_train_kfold\.txt: line 6 names 'photo/giraffe/pic_001\.jpg'"):
        build_dataset("pacs", tmp_path)


def test_unsplit_imagenet_val_is_refused_clearly(tmp_path):
    make_imagenet(tmp_path, unsplit_val=True)
    with pytest.raises(MetapromptError, match=r"images/val: holds 6 images directly, expected them sorted into"):
        build_dataset("imagenet", tmp_path)


def test_empty_split_is_an_error(tmp_path):
    folder = make_coop_dataset(tmp_path, "eurosat")
    split_file = folder / "split_zhou_EuroSAT.json"
    content = json.loads(split_file.read_text())
    content["val"] = []
    split_file.write_text(json.dumps(content))
    with pytest.raises(MetapromptError, match=r"split_zhou_EuroSAT\.json: the 'val' split is empty"):
        build_dataset("eurosat", tmp_path)


def test_missing_dataset_folder_is_named(tmp_path):
    with pytest.raises(MetapromptError, match=r"oxford_flowers: dataset folder not found \(expected jpg/ and"):
        build_dataset("oxford_flowers", tmp_path)


def test_dg_class_folders_must_agree_across_domains(tmp_path):
    folder = make_vlcs(tmp_path)
    shutil.rmtree(folder / "SUN" / "test" / "2")
    with pytest.raises(MetapromptError, match=r"SUN/test: class folders differ from those of .*differing: \['2'\]"):
        build_dataset("vlcs", tmp_path)
