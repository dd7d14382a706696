"""The protocol runners end to end through the CLI on a tiny model, the offline world (rendered small) and a
miniature EuroSAT folder: run folders and result files, a second invocation that trains nothing, and the
report's numbers recomputed by hand from the result files."""
import contextlib
import csv
import io
import json
from pathlib import Path
from statistics import fmean, pstdev

import pytest

import metaprompt.protocols as protocols
from data_layouts import make_coop_dataset
from metaprompt.benchmark import load_results
from metaprompt.cli import main
from metaprompt.results import base_to_new_table
from metaprompt.world import render_world

SMALL = {"coop": [], "metaprompt": ["text_depth=3", "vision_depth=3"]}
FAST = ["--workers", "0", "--no-progress", "--set", "epochs=1", "--set", "max_steps=1", "--set", "batch_size=2"]
DG_TARGETS = ["photo", "sketch"]


def hm(base, new):
    return 2 * base * new / (base + new)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    # the offline world itself, rendered small: `world` (base-to-new) and `world_dg` (domain generalisation)
    render_world(root / "world", seed=0, train_per_class=3, test_per_class=2, val_per_class=1, progress=False)
    make_coop_dataset(root, "eurosat")
    return root


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def commands(root, out, tiny_model_name, tiny_weights):
    """The sweeps of this module: base-to-new and DG for two methods and two seeds, cross-dataset for one."""
    model = ["--model", tiny_model_name, "--pretrained", tiny_weights, "--root", str(root), "--out", str(out), *FAST]
    runs = []
    for method, small in SMALL.items():
        sets = [a for s in small for a in ("--set", s)]
        runs.append(["run", "base2new", "--method", method, "--datasets", "world", "--seeds", "1", "2",
                     "--set", "shots=1", *sets, *model])
        source = ["--source-accuracy"] if method == "metaprompt" else []
        runs.append(["run", "dg", "--method", method, "--dataset", "world_dg", "--shots", "1", "--seeds", "1", "2",
                     "--targets", *DG_TARGETS, *source, *sets, *model])
    runs.append(["run", "xd", "--method", "coop", "--source", "world", "--targets", "world_dg", "eurosat",
                 "--seeds", "1", "--set", "shots=1", *model])
    return runs


@pytest.fixture(scope="module")
def first_output(commands):
    """What the first invocation of every sweep printed."""
    lines = []
    for argv in commands:
        with _capture_log() as log:
            assert main(argv) == 0
        lines += log
    return lines


@contextlib.contextmanager
def _capture_log():
    """Collects the lines the sweeps print (pytest's capsys is function-scoped; this serves fixtures too)."""
    buffer, lines = io.StringIO(), []
    with contextlib.redirect_stdout(buffer):
        yield lines
    lines += buffer.getvalue().splitlines()


def results_of(out: Path, protocol: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / protocol).rglob("result.json"))]


def test_each_run_has_its_folder_config_artifact_and_result(first_output, out):
    for method in SMALL:
        for seed in (1, 2):
            folder = out / "base2new" / method / "world" / f"seed{seed}"
            assert {"config.yaml", "prompts.safetensors", "result.json"} <= {p.name for p in folder.iterdir()}
            result = json.loads((folder / "result.json").read_text())
            assert result["protocol"] == "base2new" and result["method"] == method and result["seed"] == seed
            assert result["dataset"] == "world" and result["wall_seconds"] > 0
            assert {"metaprompt", "torch"} <= set(result["environment"])
            m = result["metrics"]
            assert m["hm"] == pytest.approx(hm(m["base"], m["new"]))
            for target in DG_TARGETS:
                dg = out / "dg" / method / "world_dg" / "shots1" / target / f"seed{seed}"
                assert (dg / "prompts.safetensors").is_file()
                assert json.loads((dg / "result.json").read_text())["target"] == target
    assert "meta_split: domain" in (out / "dg/metaprompt/world_dg/shots1/photo/seed1/config.yaml").read_text()
    assert "meta_split: class" in (out / "base2new/metaprompt/world/seed1/config.yaml").read_text()
    assert "[1/2] base2new coop world seed 1: done in" in "\n".join(first_output)
    assert sum(": done in" in line for line in first_output) == 4 + 8 + 3


def test_cross_dataset_trains_once_and_tests_every_target(first_output, out):
    base = out / "xd" / "coop" / "world"
    assert (base / "world" / "seed1" / "prompts.safetensors").is_file()
    for target in ("world_dg", "eurosat"):
        result = json.loads((base / target / "seed1" / "result.json").read_text())
        assert result["source"] == "world" and result["dataset"] == target
        assert (base / target / "seed1" / result["artifact"]).resolve() == (base / "world/seed1/prompts.safetensors")
        assert not (base / target / "seed1" / "prompts.safetensors").exists()


def test_second_invocation_trains_and_loads_nothing(first_output, commands, out, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a finished run was read, loaded or trained again")

    for name in ("train_run", "build_method_for_run", "build_dataset", "read_artifact"):
        monkeypatch.setattr(protocols, name, forbidden)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and ".sweep" not in p.parts}
    with _capture_log() as log:
        for argv in commands:
            assert main(argv) == 0
    runs = [line for line in log if line.startswith("[")]
    assert len(runs) == sum(line.startswith("[") and not line.endswith(": started") for line in first_output)
    assert all(line.endswith(": skipped (finished)") for line in runs)
    summaries = [line for line in log if line.startswith("sweep finished:")]
    assert summaries == [line for line in first_output if line.startswith("sweep finished:")]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # the run files (the lock file aside)


def test_an_interrupted_run_resumes_and_finishes(first_output, commands, out):
    folder = out / "base2new" / "coop" / "world" / "seed2"
    before = json.loads((folder / "result.json").read_text())["metrics"]
    (folder / "result.json").unlink()  # trained and tested, but stopped before the result was written
    with _capture_log() as log:
        assert main(commands[0]) == 0
    assert [line for line in log if "done in" in line][0].startswith("[2/2] base2new coop world seed 2: done in")
    assert json.loads((folder / "result.json").read_text())["metrics"] == pytest.approx(before)


def _csv_cells(text: str) -> dict[tuple[str, str, str], dict]:
    return {(r["table"], r["row"], r["column"]): r for r in csv.DictReader(io.StringIO(text))}


def value(cells: dict, table: str, row: str, column: str, field: str = "mean") -> float:
    return float(cells[(table, row, column)][field])


def test_report_numbers_follow_the_result_files(first_output, out, capsys):
    assert main(["report", str(out), "--format", "csv"]) == 0
    cells = _csv_cells(capsys.readouterr().out)
    b2n = "Base-to-new generalisation (1 shot)"
    for method in SMALL:
        runs = [r for r in results_of(out, "base2new") if r["method"] == method]
        base = [r["metrics"]["base"] for r in runs]
        new = [r["metrics"]["new"] for r in runs]
        column = f"{method}†"  # the tiny model departs from the published presets: marked
        assert value(cells, b2n, "world", f"{column} Base") == pytest.approx(fmean(base), abs=1e-4)
        assert value(cells, b2n, "world", f"{column} New", "std") == pytest.approx(pstdev(new), abs=1e-4)
        assert value(cells, b2n, "world", f"{column} HM") == pytest.approx(hm(fmean(base), fmean(new)), abs=1e-4)
        # one dataset: the Average row's HM is the harmonic mean of the averaged Base and New
        assert value(cells, b2n, "Average", f"{column} HM") == pytest.approx(hm(fmean(base), fmean(new)), abs=1e-4)

        dg = [r for r in results_of(out, "dg") if r["method"] == method]
        per_target = {t: fmean(r["metrics"]["accuracy"] for r in dg if r["target"] == t) for t in DG_TARGETS}
        table = "Domain generalisation: world_dg"
        assert value(cells, table, "sketch", f"{column} 1-shot") == pytest.approx(per_target["sketch"], abs=1e-4)
        assert value(cells, table, "Average", f"{column} 1-shot") == pytest.approx(fmean(per_target.values()), abs=1e-4)
    gap_table = "Domain generalisation: world_dg, source vs held-out domains"
    dg = [r for r in results_of(out, "dg") if r["method"] == "metaprompt"]
    source = fmean(fmean(r["metrics"]["source"] for r in dg if r["target"] == t) for t in DG_TARGETS)
    held_out = fmean(fmean(r["metrics"]["accuracy"] for r in dg if r["target"] == t) for t in DG_TARGETS)
    assert value(cells, gap_table, "metaprompt† 1-shot", "source domains") == pytest.approx(source, abs=1e-4)
    assert value(cells, gap_table, "metaprompt† 1-shot", "held-out domain") == pytest.approx(held_out, abs=1e-4)
    assert value(cells, gap_table, "metaprompt† 1-shot", "gap") == pytest.approx(source - held_out, abs=1e-4)
    assert (gap_table, "coop† 1-shot", "gap") not in cells  # coop's runs were made without --source-accuracy
    xd = {r["dataset"]: r["metrics"]["accuracy"] for r in results_of(out, "xd")}
    average = value(cells, "Cross-dataset transfer from world (1 shot)", "coop†", "Average")
    assert average == pytest.approx(fmean([xd["world_dg"], xd["eurosat"]]), abs=1e-4)
    # 2 of world_dg's 4 targets, 2 of the 10 cross-dataset targets: partial averages, marked
    assert cells[("Domain generalisation: world_dg", "Average", "coop† 1-shot")]["covers"] == "2/4"
    assert cells[("Domain generalisation (average over target domains)", "coop† 1-shot", "world_dg")]["covers"] == "2/4"
    assert cells[(gap_table, "metaprompt† 1-shot", "gap")]["covers"] == "2/4"
    assert cells[("Cross-dataset transfer from world (1 shot)", "coop†", "Average")]["covers"] == "2/10"
    assert cells[("Domain generalisation: world_dg", "sketch", "coop† 1-shot")]["covers"] == ""


def test_report_prints_markdown_and_latex_tables_and_writes_the_figure(first_output, out, tmp_path, capsys):
    figure = tmp_path / "figure.png"
    assert main(["report", str(out), "--figure", str(figure)]) == 0
    md = capsys.readouterr().out
    assert "### Base-to-new generalisation" in md and "### Domain generalisation: world_dg" in md
    assert "| dataset | coop† Base | coop† New | coop† HM | metaprompt† Base |" in md
    assert "| target | coop† 1-shot | metaprompt† 1-shot |" in md
    assert "coop† departs from KaiyangZhou/CoOp configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml: model=" in md
    assert "\n| Average |" in md and " ± " in md
    average = next(line for line in md.splitlines() if line.startswith("| Average |") and "(2/4)" in line)
    assert average.count("(2/4)") == 2 and "_(k/n): an average over k of the protocol's n target domains only" in md
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(out), "--format", "latex", "--no-std"]) == 0
    latex = capsys.readouterr().out
    assert latex.count(r"\begin{tabular}") == md.count("### ") and r"\pm" not in latex
    assert r"world\_dg" in latex and (out / "report.png").is_file()


def test_report_of_an_empty_folder_says_what_it_expected(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no result.json under" in capsys.readouterr().err


def test_average_row_hm_is_the_hm_of_the_averaged_base_and_new():
    def result(dataset, seed, base, new):
        return {"protocol": "base2new", "name": "coop", "method": "coop", "dataset": dataset, "seed": seed,
                "metrics": {"base": base, "new": new, "hm": hm(base, new)}}

    results = [result("dtd", 1, 90.0, 10.0), result("dtd", 2, 80.0, 30.0), result("eurosat", 1, 50.0, 70.0)]
    table = base_to_new_table(results)
    rows = dict(table.rows)
    base, new, h = rows["dtd"]
    assert (base.mean, new.mean, h.mean) == pytest.approx((85.0, 20.0, hm(85.0, 20.0)))
    assert h.std == pytest.approx(pstdev([hm(90.0, 10.0), hm(80.0, 30.0)]))
    average_base, average_new = fmean([85.0, 50.0]), fmean([20.0, 70.0])
    assert [c.mean for c in rows["Average"]] == pytest.approx([average_base, average_new,
                                                                hm(average_base, average_new)])
    assert table.rows[0][0] == "dtd" and table.rows[-1][0] == "Average"


def test_a_missing_dataset_stops_the_sweep_before_any_training(root, tmp_path, capsys):
    argv = ["run", "base2new", "--method", "coop", "--datasets", "eurosat", "dtd", "--seeds", "1",
            "--root", str(root), "--out", str(tmp_path), *FAST]
    assert main(argv) == 2
    assert "missing under the data root" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_a_dg_sweep_with_classes_smaller_than_the_shots_runs_to_the_end_and_records_them(tmp_path, tiny_model_name,
                                                                                        tiny_weights):
    """DomainNet's miniature has 2 training images per class and domain (painting's alarm_clock: 1): at 5 shots
    every class falls short, as real DomainNet classes do at 5 shots; the reference takes what there is."""
    from data_layouts import make_domainnet

    make_domainnet(tmp_path / "data")
    argv = ["run", "dg", "--method", "coop", "--dataset", "domainnet", "--shots", "5", "--seeds", "1", "--targets",
            "real", "--model", tiny_model_name, "--pretrained", tiny_weights, "--root", str(tmp_path / "data"),
            "--out", str(tmp_path / "out"), *FAST]
    with _capture_log() as log:
        assert main(argv) == 0
    result = json.loads((tmp_path / "out/dg/coop/domainnet/shots5/real/seed1/result.json").read_text())
    # 5 source domains x 3 classes, each 2 images short, but painting's alarm_clock, 4 short
    assert result["shortfall"] == {"classes": 15, "missing_images": 14 * 3 + 4}
    assert "15 class(es) had fewer images than the shots, 46 short" in [line for line in log if line.startswith("[")][-1]
    record = json.loads((tmp_path / "out/dg/coop/domainnet/shots5/real/seed1/fewshot.json").read_text())
    assert len(record["train"]) == 5 * 3 * 2 - 1 and len(record["shortfall"]) == 15


def test_figure_titles_name_the_partial_averages(first_output, out, monkeypatch, tmp_path):
    import metaprompt.results as results

    titles = []
    original = results._bars

    def record(ax, panel):
        original(ax, panel)
        titles.append(ax.get_title())

    monkeypatch.setattr(results, "_bars", record)
    report = results.build_report(load_results(out))
    results.save_figure(report.panels, tmp_path / "figure.png")
    dg_summary = next(t for t in titles if t.startswith("Domain generalisation (average over target domains)"))
    assert "partial averages: coop† 1-shot 2/4, metaprompt† 1-shot 2/4" in dg_summary
    assert not any("partial" in t for t in titles if t.startswith("Base-to-new"))
