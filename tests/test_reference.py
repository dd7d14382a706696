"""Reference files: a paper's per-dataset numbers (or an earlier sweep's) beside the measured ones
(`metaprompt report --reference`), and a sweep written as one (`--save-reference`)."""
from __future__ import annotations

import json

import pytest
import yaml

from metaprompt.cli import main
from metaprompt.reference import read_reference
from metaprompt.results import build_report, reference_numbers


def result(protocol, dataset, seed, metrics, name="coop", **fields):
    return {"protocol": protocol, "name": name, "method": fields.pop("method", name), "dataset": dataset,
            "seed": seed, "shots": fields.pop("shots", 16), "model": fields.pop("model", "ViT-B-16"),
            "pretrained": "openai", "preset": fields.pop("preset", f"{name}_b2n"), "metrics": metrics, **fields}


def b2n(dataset, seed, base, new, **fields):
    return result("base2new", dataset, seed, {"base": base, "new": new, "hm": 2 * base * new / (base + new)}, **fields)


def write(tmp_path, document, name="ref.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document) if isinstance(document, dict) else document)
    return path


SOURCE = "Someone et al., A Paper, 2099, Table 1"


def test_base_to_new_numbers_per_dataset_beside_the_measured_ones(tmp_path):
    path = write(tmp_path, {"source": SOURCE, "settings": {"model": "ViT-B/16", "shots": 16}, "base2new": {
        "coop": {"dtd": [80.0, 50.0], "eurosat": [90.0, 60.0, 72.0], "average": [85.0, 55.0]}}})
    results = [b2n("dtd", s, base, new) for s, base, new in ((1, 78.0, 52.0), (2, 80.0, 54.0))]
    results += [b2n("eurosat", 1, 91.0, 59.0)]
    table = build_report(results, references=[read_reference(path)]).tables[-1]
    assert table.title == "Base-to-new, coop: reference vs measured"
    rows = dict(table.rows)
    assert [c.mean for c in rows["dtd"][:6]] == pytest.approx([80.0, 79.0, -1.0, 50.0, 53.0, 3.0])
    hm = 2 * 79 * 53 / (79 + 53)
    assert [c.mean for c in rows["dtd"][6:]] == pytest.approx([2 * 80 * 50 / 130, hm, hm - 2 * 80 * 50 / 130])
    assert rows["eurosat"][6].mean == 72.0  # a given HM is the file's (it is checked against Base and New)
    assert rows["Average"][1].mean == pytest.approx((79 + 91) / 2) and rows["Average"][1].covers == (2, 11)
    assert "reference: Someone et al., A Paper, 2099, Table 1 (ref.yaml)" in table.note
    assert "(k/n)" in table.note  # the measured average covers 2 of the 11 datasets: said so
    assert "differs" not in table.note  # ViT-B/16 is open_clip's ViT-B-16


def test_runs_measured_otherwise_than_the_reference_say_so(tmp_path):
    path = write(tmp_path, {"source": SOURCE, "settings": {"shots": 16, "model": "ViT-B-16"},
                            "base2new": {"coop": {"dtd": [80.0, 50.0]}}})
    results = [b2n("dtd", 1, 70.0, 50.0, shots=4), b2n("dtd", 1, 75.0, 50.0, model="ViT-L-14", name="coop_l",
                                                       method="coop")]
    tables = build_report(results, references=[read_reference(path)]).tables
    by_title = {t.title: t for t in tables}
    assert "coop differs from the reference's settings: shots 4 (reference: 16)" in \
        by_title["Base-to-new, coop: reference vs measured"].note
    assert "Base-to-new, coop_l: reference vs measured" not in by_title  # the run named coop is the entry's
    departing = b2n("dtd", 1, 70.0, 50.0, follows="CoOp/vit_b16_ep50.yaml",
                    departures={"train.lr": {"used": 0.01, "published": 0.002}})
    table = build_report([departing], references=[read_reference(path)]).tables[-1]
    assert table.title == "Base-to-new, coop†: reference vs measured"
    assert "coop† departs from CoOp/vit_b16_ep50.yaml: lr=0.01 (published 0.002)" in table.note


def test_an_entry_matches_a_method_when_no_run_has_its_name(tmp_path):
    path = write(tmp_path, {"source": SOURCE, "base2new": {"coop": {"dtd": [80.0, 50.0]}, "maple": {"dtd": [1, 2]}}})
    lines = []
    results = [b2n("dtd", 1, 70.0, 50.0, name="coop_a", method="coop"), b2n("dtd", 1, 72.0, 50.0, name="coop_b",
                                                                             method="coop")]
    tables = build_report(results, references=[read_reference(path)], warn=lines.append).tables
    assert [t.title for t in tables[-2:]] == ["Base-to-new, coop_a: reference vs measured",
                                              "Base-to-new, coop_b: reference vs measured"]
    assert lines == [f"{path}: base2new.maple: no base2new run is named 'maple' or of method 'maple'; its numbers "
                     "are not shown"]


def test_cross_dataset_and_domain_generalisation(tmp_path):
    path = write(tmp_path, {"source": SOURCE, "xd": {"coop": {"from": "imagenet", "imagenet": 71.5, "dtd": 41.9,
                                                              "eurosat": 46.4, "imagenetv2": 64.2, "average": 60.0}},
                            "dg": {"metaprompt": {5: {"pacs": 97.0, "vlcs": 82.6}}}})
    results = [result("xd", d, 1, {"accuracy": a}, source="imagenet")
               for d, a in (("imagenet", 70.0), ("dtd", 40.0), ("eurosat", 50.0), ("imagenetv2", 63.0))]
    results += [result("dg", "pacs", 1, {"accuracy": a}, name="metaprompt", target=t, shots=5)
                for t, a in (("art_painting", 90.0), ("cartoon", 94.0), ("photo", 98.0), ("sketch", 90.0))]
    xd, dg = build_report(results, references=[read_reference(path)]).tables[-2:]
    assert xd.title == "Cross-dataset transfer from imagenet, coop: reference vs measured"
    rows = dict(xd.rows)
    assert list(rows) == ["imagenet", "dtd", "eurosat", "imagenetv2", "Average"]
    assert [c.mean for c in rows["eurosat"]] == pytest.approx([46.4, 50.0, 3.6])
    assert rows["Average"][1].mean == pytest.approx(45.0) and rows["Average"][1].covers == (2, 10)  # not imagenetv2
    assert dg.columns[:3] == ["pacs (ref)", "pacs", "pacs Δ"]
    assert [c.mean if c else None for c in dict(dg.rows)["metaprompt 5-shot"]] == \
        pytest.approx([97.0, 93.0, -4.0, 82.6, None, None])


def test_a_sweep_saved_as_a_reference_reads_back_and_compares_to_zero(tmp_path, capsys):
    results = [b2n(d, s, 70.0 + s, 50.0 + s) for d in ("dtd", "eurosat") for s in (1, 2)]
    results += [result("dg", "pacs", 1, {"accuracy": 90.0}, name="metaprompt", target=t, shots=1)
                for t in ("art_painting", "cartoon", "photo", "sketch")]
    results += [result("dg", "vlcs", 1, {"accuracy": 80.0}, name="metaprompt", target="sun", shots=1)]  # 1 of 4
    results += [result("xd", d, 1, {"accuracy": a}, source="world") for d, a in (("world", 60.0), ("dtd", 30.0))]
    for k, r in enumerate(results):
        (tmp_path / "runs" / str(k)).mkdir(parents=True)
        (tmp_path / "runs" / str(k) / "result.json").write_text(json.dumps(r))
    saved = tmp_path / "saved.yaml"
    assert main(["report", str(tmp_path / "runs"), "--save-reference", str(saved), "--source", "lab A, 2 seeds",
                 "--figure", str(tmp_path / "f.png")]) == 0
    document = yaml.safe_load(saved.read_text())
    assert document["source"] == "lab A, 2 seeds"
    assert document["base2new"]["coop"]["dtd"] == [71.5, 51.5, round(2 * 71.5 * 51.5 / 123, 2)]
    assert document["base2new"]["coop"]["settings"] == {"model": "ViT-B-16", "pretrained": "openai", "shots": 16,
                                                        "preset": "coop_b2n"}
    assert "average" not in document["base2new"]["coop"]  # over 2 of the 11 datasets: not the protocol's average
    assert document["dg"]["metaprompt"][1] == {"pacs": 90.0}  # VLCS covers one target of four: left out
    assert "shots" not in document["dg"]["metaprompt"]["settings"]  # DG's shots are its keys
    assert document["xd"]["coop"] == {"settings": {"model": "ViT-B-16", "pretrained": "openai", "shots": 16,
                                                   "preset": "coop_b2n"}, "from": "world", "world": 60.0, "dtd": 30.0}
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--reference", str(saved), "--figure", str(tmp_path / "f.png")]) == 0
    out = capsys.readouterr().out
    assert "### Base-to-new, coop: reference vs measured" in out
    assert "| dtd | 71.50 | 71.50 ± 0.50 | 0.00 | 51.50 | 51.50 ± 0.50 | 0.00 |" in out
    assert "| world | 60.00 | 60.00 | 0.00 |" in out  # the source's accuracy, read back as the source's
    assert main(["report", str(tmp_path / "runs"), "--reference", str(saved), "--format", "latex",
                 "--figure", str(tmp_path / "f.png")]) == 0
    latex = capsys.readouterr().out
    assert r"Base $\Delta$ & New (ref)" in latex and "Δ" not in latex  # pdflatex has no Unicode Δ
    assert numbers_of(saved) == reference_numbers(results)[0]["base2new"]["coop"]


def numbers_of(path):
    return {d: v for d, v in yaml.safe_load(path.read_text())["base2new"]["coop"].items() if d != "settings"}


@pytest.mark.parametrize("text, expected", [
    ("source: x\nbase2new: {coop: {dtd: [80, 50, 70]}}", "base2new.coop.dtd: HM 70.0 is not the harmonic mean of "
                                                         "Base 80.0 and New 50.0 (expected 61.54)"),
    ("base2new: {coop: {dtd: [80, 50]}}", "source is required"),
    ("source: x\n", "no numbers (expected at least one of base2new, xd, dg)"),
    ("source: x\nbase2new: {coop: {dtd: [80, 150]}}", "base2new.coop.dtd must be an accuracy in percent"),
    ("source: x\nbase2new: {coop: {dtd: 80}}", "base2new.coop.dtd must be [Base, New] or [Base, New, HM]"),
    ("source: x\nfewshot: {coop: {dtd: 80}}", "unknown key 'fewshot'"),
    ("source: x\nsettings: {lr: 0.1}\nxd: {coop: {dtd: 40}}", "settings: unknown setting 'lr'"),
    ("source: x\ndg: {coop: {five: {pacs: 90}}}", "dg.coop: expected shots per class (a positive integer)"),
    ("source: x\nxd: {coop: {from: [imagenet], dtd: 40}}", "xd.coop.from must be the source dataset's name"),
    ("source: x\nxd: !!python/object/apply:os.system [echo hi]", "not valid YAML"),
    ("- a list", "expected a mapping with source and base2new, xd, dg, found list"),
    ("source: x\nxd: {coop: {from: imagenet, settings: {shots: 16}}}", "xd.coop has settings but no numbers"),
])
def test_a_bad_reference_file_is_one_line_naming_it(text, expected, tmp_path, capsys):
    path = write(tmp_path, text)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "result.json").write_text(json.dumps(b2n("dtd", 1, 70.0, 50.0)))
    assert main(["report", str(tmp_path / "runs"), "--reference", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and expected in err, err


def test_save_reference_needs_a_source_and_a_missing_reference_is_one_line(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "result.json").write_text(json.dumps(b2n("dtd", 1, 70.0, 50.0)))
    assert main(["report", str(tmp_path / "runs"), "--save-reference", str(tmp_path / "r.yaml")]) == 2
    assert "--save-reference needs --source TEXT" in capsys.readouterr().err
    assert not (tmp_path / "r.yaml").exists()
    typed = write(tmp_path, {"source": SOURCE, "base2new": {"coop": {"dtd": [80.0, 50.0]}}}, "typed.yaml")
    before = typed.read_bytes()
    assert main(["report", str(tmp_path / "runs"), "--save-reference", str(typed), "--source", "x"]) == 2
    assert f"--save-reference {typed} exists" in capsys.readouterr().err and typed.read_bytes() == before
    assert main(["report", str(tmp_path / "runs"), "--reference", str(tmp_path / "nope.yaml")]) == 2
    assert f"reference file {tmp_path / 'nope.yaml'} not found" in capsys.readouterr().err


def test_a_saved_cross_dataset_entry_holds_one_source_and_says_which(tmp_path):
    results = [result("xd", d, 1, {"accuracy": 50.0}, source=s) for s in ("imagenet", "world") for d in (s, "dtd")]
    lines = []
    numbers, _ = reference_numbers(results, lines.append)
    assert numbers["xd"]["coop"] == {"from": "imagenet", "imagenet": 50.0, "dtd": 50.0}
    assert lines == ["xd coop: runs from 2 sources (imagenet, world); the reference holds those from imagenet only "
                     "(give the others --name of their own to keep them)"]
