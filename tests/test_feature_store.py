"""The sweep's frozen-feature store: results with it equal results without it, bit for bit; a second seed's
evaluation encodes no test image; an entry that does not match is recomputed, never trusted."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import metaprompt.evaluation as evaluation
from metaprompt.cli import main
from metaprompt.clip import load_clip
from metaprompt.data.base import Datum
from metaprompt.evaluation import evaluate
from metaprompt.feature_store import FeatureStore, model_identity
from metaprompt.methods import build_method, make_config
from metaprompt.world import render_world
from helpers import make_image_folder

CLASSES = ["red", "green", "blue", "grey"]
METHODS = ("zeroshot", "coop", "cocoop")


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    render_world(root / "world", seed=0, train_per_class=2, test_per_class=2, val_per_class=1, progress=False)
    return root


def sweep(root: Path, out: Path, method: str, seeds: list[str], *extra: str) -> list[str]:
    """Two steps of ``method`` on the world (CoCoOp, which has no world preset: its own on the world's CLIP)."""
    config = ["--method", "cocoop", "--model", "world-tiny", "--pretrained", "none", "--set", "test_batch_size=256"] \
        if method == "cocoop" else ["--preset", f"world_{method}_b2n"]
    return ["run", "base2new", *config, "--root", str(root), "--datasets", "world", "--seeds", *seeds, "--out", str(out),
            "--no-progress", "--workers", "0", "--set", "shots=2", "--set", "max_steps=2", *extra]


def results(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("result.json"))}


def test_a_sweep_with_the_store_gives_the_results_and_prompts_of_one_without(root, tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    for method in METHODS:
        assert main(sweep(root, on, method, ["1", "2"])) == 0
        assert main(sweep(root, off, method, ["1", "2"], "--no-feature-store")) == 0
    with_store, without = results(on), results(off)
    assert with_store.keys() == without.keys() and len(with_store) == 6
    for run in with_store:
        assert with_store[run]["metrics"] == without[run]["metrics"], run
        artifact = Path(run, "prompts.safetensors")
        if (on / artifact).is_file():
            a, b = load_file(str(on / artifact)), load_file(str(off / artifact))
            assert all(torch.equal(a[k], b[k]) for k in a), run
        assert without[run]["cost"]["store_share"] == 0.0
    # the first run (zero-shot, seed 1) computed the test features; every later one was served them
    shares = {run: r["cost"]["store_share"] for run, r in with_store.items()}
    assert shares.pop("base2new/zeroshot/world/seed1") == 0.0 and set(shares.values()) == {1.0}, shares
    assert not (off / ".sweep" / "features").exists()


def test_the_second_seed_encodes_no_test_image(root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert main(sweep(root, out, "coop", ["1"])) == 0

    def no_loading(*args, **kwargs):
        raise AssertionError("a test image was read and encoded although the store holds its features")

    monkeypatch.setattr(evaluation, "_decoded_batches", no_loading)
    assert main(sweep(root, out, "coop", ["1", "2"])) == 0
    cost = json.loads((out / "base2new/coop/world/seed2/result.json").read_text())["cost"]
    assert cost["store_share"] == 1.0 and cost["test_features_from_store"] == cost["eval_images"] == 120


# ------------------------------------------------------------------ entries, keys, corruption

@pytest.fixture()
def items(tmp_path) -> list[Datum]:
    root = make_image_folder(tmp_path / "data", CLASSES, {"test": 3})
    return [Datum(str(p), label, name) for label, name in enumerate(CLASSES)
            for p in sorted((root / "test" / name).glob("*.png"))]


@pytest.fixture()
def coop(tiny_model_name, tiny_weights):
    torch.manual_seed(0)
    clip = load_clip(tiny_model_name, tiny_weights, precision="fp32")
    return build_method("coop", clip, CLASSES, make_config("coop", {"n_ctx": 2}))


def test_served_features_give_the_computed_logits_bit_for_bit(coop, items, tmp_path):
    store = FeatureStore(tmp_path / "store")
    plain = evaluate(coop, items, batch_size=5, num_workers=0, progress=False, decoded=None)
    first = evaluate(coop, items, batch_size=5, num_workers=0, progress=False, decoded=None, store=store)
    second = evaluate(coop, items, batch_size=5, num_workers=0, progress=False, decoded=None, store=store)
    assert (first.from_store, second.from_store) == (0, len(items))
    assert torch.equal(plain.logits, first.logits) and torch.equal(first.logits, second.logits)
    assert torch.equal(plain.labels, second.labels)
    other_batch = evaluate(coop, items, batch_size=4, num_workers=0, progress=False, decoded=None, store=store)
    assert other_batch.from_store == 0  # computed at another batch size: another entry


@pytest.mark.parametrize("damage", ["garbage", "flipped byte", "truncated"])
def test_a_damaged_entry_is_recomputed_and_rewritten(damage, coop, items, tmp_path):
    store = FeatureStore(tmp_path / "store")
    first = evaluate(coop, items, batch_size=5, num_workers=0, progress=False, decoded=None, store=store)
    (entry,) = (tmp_path / "store").glob("*.safetensors")
    data = bytearray(entry.read_bytes())
    if damage == "garbage":
        data = bytearray(b"not a safetensors file")
    elif damage == "flipped byte":
        data[-3] ^= 0xFF  # inside the last feature value
    else:
        data = data[: len(data) // 2]
    entry.write_bytes(bytes(data))
    again = evaluate(coop, items, batch_size=5, num_workers=0, progress=False, decoded=None, store=store)
    assert again.from_store == 0 and store.counts.rejected == 1
    assert torch.equal(again.logits, first.logits)
    served = evaluate(coop, items, batch_size=5, num_workers=0, progress=False, decoded=None, store=store)
    assert served.from_store == len(items) and torch.equal(served.logits, first.logits)


def test_a_changed_image_or_precision_is_another_entry_and_random_weights_none(coop, items, tmp_path,
                                                                               tiny_model_name):
    store = FeatureStore(tmp_path / "store")
    key = store.image_key(coop.clip, items, 5)
    path = Path(items[0].impath)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10 ** 9))
    assert store.image_key(coop.clip, items, 5) != key
    coop.clip.precision = "bf16"
    assert store.image_key(coop.clip, items, 5) not in (key, None)
    random = load_clip(tiny_model_name, None, precision="fp32")
    assert model_identity(random) is None and store.image_key(random, items, 5) is None


def test_hand_crafted_classifiers_are_served_from_the_store(tiny_model_name, tiny_weights, tmp_path):
    store = FeatureStore(tmp_path / "store")
    clip = load_clip(tiny_model_name, tiny_weights, precision="fp32")
    plain = build_method("zeroshot", clip, CLASSES, make_config("zeroshot", {})).classifier
    clip.feature_store = store
    first = build_method("zeroshot", clip, CLASSES, make_config("zeroshot", {})).classifier
    second = build_method("zeroshot", clip, CLASSES, make_config("zeroshot", {})).classifier
    assert (store.counts.classifiers_computed, store.counts.classifiers_served) == (1, 1)
    assert torch.equal(plain, first) and torch.equal(first, second)
