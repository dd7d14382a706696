"""`metaprompt run fewshot` end to end on the offline world (rendered small): a run per dataset, shot count
and seed over all classes, its results, and the report's accuracy-against-shots table and figure, the numbers
recomputed by hand from the result files."""
from __future__ import annotations

import json
from statistics import fmean, pstdev

import pytest

from metaprompt.benchmark import load_results
from metaprompt.cli import main
from metaprompt.results import fewshot_tables
from metaprompt.world import render_world

SHOTS, SEEDS = ["1", "2"], ["1", "2"]
PRESETS = {"zeroshot": "world_zeroshot_b2n", "linear_probe": "world_linear_probe", "coop": "world_coop_b2n"}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    render_world(root / "world", seed=0, train_per_class=2, test_per_class=1, val_per_class=1, progress=False)
    out = tmp_path_factory.mktemp("results")
    for method, preset in PRESETS.items():
        assert main(["run", "fewshot", "--preset", preset, "--root", str(root), "--datasets", "world", "--shots", *SHOTS,
                     "--seeds", *SEEDS, "--out", str(out), "--no-progress", "--set", "max_steps=2"]) == 0
    return out


def test_a_run_per_shot_count_and_seed_trains_on_every_class(out):
    for method in PRESETS:
        for shots in SHOTS:
            for seed in SEEDS:
                folder = out / "fewshot" / method / "world" / f"shots{shots}" / f"seed{seed}"
                result = json.loads((folder / "result.json").read_text())
                assert (result["protocol"], result["shots"], result["seed"]) == ("fewshot", int(shots), int(seed))
                metrics = json.loads((folder / "metrics.json").read_text())
                assert metrics["num_classes"] == 60 and metrics["num_train"] == 60 * int(shots)
                assert result["metrics"]["accuracy"] == metrics["accuracy"]


def test_the_report_gives_accuracy_against_shots_and_its_figure(out, capsys):
    results = load_results(out)
    (table,) = fewshot_tables(results)
    assert table.columns == ["1 shot", "2 shots"] and [name for name, _ in table.rows] == list(PRESETS)
    for name, cells in table.rows:
        for shots, cell in zip(SHOTS, cells):
            runs = [r["metrics"]["accuracy"] for r in results if r["name"] == name and r["shots"] == int(shots)]
            assert (cell.mean, cell.std, cell.seeds) == (fmean(runs), pstdev(runs), 2)
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr()
    assert "### Few-shot classification: world" in printed.out and (out / "report.png").stat().st_size > 10_000
    zero_shot = [cell.mean for name, cells in table.rows if name == "zeroshot" for cell in cells]
    assert zero_shot[0] == zero_shot[1]  # zero-shot CLIP uses no training image


def test_a_shot_count_below_one_is_refused(out, capsys):
    assert main(["run", "fewshot", "--method", "coop", "--root", str(out), "--shots", "0", "4", "--out",
                 str(out / "x")]) == 2
    assert "--shots: expected shot counts of 1 or more, got 0" in capsys.readouterr().err
