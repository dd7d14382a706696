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
    return {line.split()[0]: line for line in output.splitlines() if line.strip()}


def test_data_is_a_registered_command():
    assert "data" in cli.COMMAND_MODULES


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
    with pytest.raises(SystemExit):
        run_cli(["data", "check", "--root", str(tmp_path), "--dataset", "mnist"], capsys, monkeypatch)
