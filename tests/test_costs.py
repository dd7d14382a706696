"""What a run costs, in its records and in the report's cost table."""
from __future__ import annotations

import json
from statistics import fmean

import pytest
import torch

from metaprompt.cli import main
from metaprompt.costs import FlopCount
from metaprompt.results import COST_COLUMNS, cost_table, render
from helpers import make_image_folder, train_args


def test_a_run_records_its_parameters_flops_times_and_throughput(tmp_path, model):
    folder = make_image_folder(tmp_path / "data", ["ant", "bee", "cat"], {"train": 4, "test": 2})
    out = tmp_path / "run"
    assert main(train_args("coop", folder, out, model, "n_ctx=2", "epochs=2", "batch_size=4",
                           extra=("--shots", "0"))) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    cost = metrics["cost"]
    from safetensors.torch import load_file

    # CoOp trains its context alone: the artifact's tensor is every trainable parameter
    assert cost["trainable_parameters"] == load_file(str(out / "prompts.safetensors"))["text_prompts"].numel()
    assert cost["train_step_gflop"] > 0 and cost["train_images_per_second"] == pytest.approx(
        12 * 2 / cost["train_seconds"])  # 12 images, 2 epochs
    assert cost["eval_images"] == 6 and cost["test_features_from_store"] == 0
    assert cost["peak_memory_mib"] > 0 and cost["peak_memory_of"] == "process RSS"


def test_counting_flops_leaves_the_computation_as_it_is():
    torch.manual_seed(0)
    layer, x = torch.nn.Linear(8, 4), torch.randn(3, 8)
    plain = layer(x)
    with FlopCount() as counter:
        counted = layer(x)
    assert torch.equal(plain, counted) and counter.flops == 2 * 3 * 8 * 4


def result(protocol, name, **cost):
    return {"protocol": protocol, "name": name, "method": name, "cost": cost}


def test_the_cost_table_averages_each_method_over_its_runs():
    results = [result("base2new", "coop", trainable_parameters=2048, train_step_gflop=3.0, train_seconds=10.0,
                      train_images_per_second=50.0, eval_seconds=2.0, eval_images_per_second=500.0,
                      peak_memory_mib=100.0, store_share=0.0, peak_memory_of="cuda allocated"),
               result("base2new", "coop", trainable_parameters=2048, train_step_gflop=3.0, train_seconds=20.0,
                      train_images_per_second=30.0, eval_seconds=1.0, eval_images_per_second=1000.0,
                      peak_memory_mib=300.0, store_share=1.0, peak_memory_of="cuda allocated"),
               result("base2new", "zeroshot", trainable_parameters=0, train_step_gflop=None, train_seconds=0.0,
                      eval_seconds=4.0, eval_images_per_second=250.0, peak_memory_mib=50.0, store_share=0.5,
                      peak_memory_of="cuda allocated"),
               {"protocol": "base2new", "name": "ivlp", "method": "ivlp"}]  # an older result without costs: left out
    table = cost_table(results)
    assert [label for label, _ in table.rows] == ["base2new zeroshot (1 runs)", "base2new coop (2 runs)"]
    coop = dict(zip(table.columns, table.rows[1][1]))
    assert coop["trainable params (k)"].mean == 2.048 and coop["train s"].mean == 15.0
    assert coop["train img/s"].mean == fmean([50.0, 30.0]) and coop["features from store %"].mean == 50.0
    zeroshot = dict(zip(table.columns, table.rows[0][1]))
    assert zeroshot["GFLOP / train step"] is None and zeroshot["train img/s"] is None
    text = render([table])
    assert "| base2new coop (2 runs) | 2.0 | 3.0 | 15.0 | 40.0 | 1.5 | 750.0 | 200.0 | 50.0 |" in text
    assert "peak memory: cuda allocated" in text and len(table.columns) == len(COST_COLUMNS)
    assert cost_table([{"protocol": "base2new", "name": "ivlp", "method": "ivlp"}]) is None
