"""``metaprompt data check``: found / missing / broken, naming the planted defect, and the exit code."""
from __future__ import annotations

import shutil

import pytest

from data_layouts import make_all, make_coop_dataset, make_fgvc_aircraft, make_imagenet, make_vlcs, write_lines
from metaprompt import cli
from metaprompt.data.registry import known_datasets


def run_cli(argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    """``metaprompt ARGV`` with only the data command loaded (independent of the other commands)."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["data"])
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _status_lines(output: str) -> dict[str, str]:
    """Each dataset's status line (its notes are the indented lines under it)."""
    return {line.split()[0]: line for line in output.splitlines() if line.strip() and not line.startswith(" ")}


def _notes(output: str, name: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
    notes = []
    for line in lines[start + 1:]:
        if not line.startswith(" "):
            break
        notes.append(line.strip())
    return notes


def test_the_full_command_line_routes_data_check_to_it(tmp_path):
    from metaprompt.cli import data

    args = cli.build_parser().parse_args(["data", "check", "--root", str(tmp_path), "--dataset", "dtd"])
    assert args.func is data.run_check and args.datasets == ["dtd"]


def test_check_all_found(tmp_path, capsys, monkeypatch):
    make_all(tmp_path)
    code, output = run_cli(["data", "check", "--root", str(tmp_path)], capsys, monkeypatch)
    lines = _status_lines(output)
    assert code == 0
    assert set(lines) == set(known_datasets())
    assert all(line.split()[1] == "found" for line in lines.values())
    assert "3 classes; train 9, val 6, test 6 images" in lines["eurosat"]
    assert "domains art_painting, cartoon, photo, sketch" in lines["pacs"]


def test_missing_datasets_fail_only_when_requested(tmp_path, capsys, monkeypatch):
    make_coop_dataset(tmp_path, "dtd")
    code, output = run_cli(["data", "check", "--root", str(tmp_path)], capsys, monkeypatch)
    lines = _status_lines(output)
    assert code == 0
    assert lines["dtd"].split()[1] == "found"
    assert lines["eurosat"].split()[1] == "missing" and str(tmp_path / "eurosat") in lines["eurosat"]

    code, output = run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "dtd", "eurosat"],
                           capsys, monkeypatch)
    assert code == 1 and set(_status_lines(output)) == {"dtd", "eurosat"}
    code, _ = run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "dtd"], capsys, monkeypatch)
    assert code == 0


def _broken_missing_image(root):
    folder = make_coop_dataset(root, "eurosat")
    (folder / "2750" / "Forest" / "Forest_8.jpg").unlink()
    return "eurosat", ["split_zhou_EuroSAT.json", "'train' entry 4", "Forest/Forest_8.jpg", "does not exist"]


def _broken_unsplit_val(root):
    make_imagenet(root, unsplit_val=True)
    return "imagenet", [str(root / "imagenet" / "images" / "val"), "holds 6 images directly", "<wnid>"]


def _broken_malformed_line(root):
    folder = make_fgvc_aircraft(root)
    list_file = folder / "images_variant_val.txt"
    write_lines(list_file, list_file.read_text().splitlines() + ["1000099 Boeing-9000"])
    return "fgvc_aircraft", [str(list_file), "line 7", "'1000099 Boeing-9000'", "'<image id> <variant name>'"]


def _broken_missing_folder(root):
    folder = make_vlcs(root)
    shutil.rmtree(folder / "PASCAL")
    return "vlcs", [str(folder / "pascal"), "domain folder not found", "expected pascal/ or PASCAL/"]


def _broken_missing_image_folder(root):
    folder = make_coop_dataset(root, "dtd")
    shutil.rmtree(folder / "images")
    return "dtd", [str(folder / "images"), "folder not found"]


@pytest.mark.parametrize("plant", [_broken_missing_image, _broken_unsplit_val, _broken_malformed_line,
                                   _broken_missing_folder, _broken_missing_image_folder])
def test_check_names_the_planted_defect(tmp_path, capsys, monkeypatch, plant):
    name, expected = plant(tmp_path)
    code, output = run_cli(["data", "check", "--root", str(tmp_path)], capsys, monkeypatch)
    line = _status_lines(output)[name]
    assert code == 1
    assert line.split()[1] == "broken"
    for fragment in expected:
        assert fragment in line


def test_check_unknown_root_is_an_error(tmp_path, capsys, monkeypatch):
    code, output = run_cli(["data", "check", "--root", str(tmp_path / "nope")], capsys, monkeypatch)
    assert code == 2 and "does not exist" in output


def test_check_rejects_unknown_dataset_name(tmp_path, capsys, monkeypatch):
    code, output = run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "mnist"], capsys, monkeypatch)
    assert code == 2 and "unknown dataset 'mnist'; expected one of: imagenet, " in output


def test_check_shows_class_names_and_the_smallest_class_against_the_shots(tmp_path, capsys, monkeypatch):
    make_all(tmp_path)
    code, output = run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "vlcs", "domainnet", "eurosat"],
                           capsys, monkeypatch)
    assert code == 0
    assert _notes(output, "vlcs")[0] == "classes: bird, car, chair, dog, person"  # not its folders' 0, 1, 2, ...
    smallest = _notes(output, "domainnet")[1]
    assert smallest.startswith("smallest class: train 1 (alarm_clock in painting), val -, test 1")
    assert "draws 5 training images per class per source domain: 18 class-domain pairs have fewer" in smallest
    assert "base-to-new draws 16 training images per class: 3 classes have fewer" in _notes(output, "eurosat")[1]
    _, output = run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "eurosat", "--shots", "2"],
                        capsys, monkeypatch)
    assert "draws 2 training images per class: every class has them" in _notes(output, "eurosat")[1]


def test_a_missing_split_file_says_where_it_comes_from(tmp_path, capsys, monkeypatch):
    folder = make_coop_dataset(tmp_path, "dtd")
    (folder / "split_zhou_DescribableTextures.json").unlink()
    code, output = run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "dtd"], capsys, monkeypatch)
    assert code == 1
    line = _status_lines(output)["dtd"]
    assert "split_zhou_DescribableTextures.json: file not found" in line and "CoOp's DATASETS.md" in line
    assert "`metaprompt data prepare dtd --root <data root>` makes one" in line


def test_check_accepts_the_folder_names_of_the_released_metaprompt_code(tmp_path, capsys, monkeypatch):
    make_vlcs(tmp_path, folder_name="vlcs")
    code, output = run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "vlcs"], capsys, monkeypatch)
    assert code == 0 and _status_lines(output)["vlcs"].split()[1] == "found"
