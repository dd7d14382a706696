"""The linear probe as a method: fitted through `metaprompt train`, its artifact evaluated and used by predict;
its weights are scikit-learn's on CLIP's unnormalised test-transform features (computed here independently)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from metaprompt.cli import main
from helpers import make_image_folder, train_args

CLASSES = ["ant", "bee", "cat"]


@pytest.fixture()
def probe(tmp_path, model):
    folder = make_image_folder(tmp_path / "data", CLASSES, {"train": 4, "val": 2, "test": 2})
    run = tmp_path / "run"
    assert main(train_args("linear_probe", folder, run, model, "search_steps=2", extra=("--shots", "0"))) == 0
    return folder, run, ["--model", model[0], "--pretrained", model[1]]


def test_the_probe_is_scikit_learns_regression_on_clips_own_features(probe, model):
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from torchvision import transforms as T

    from metaprompt.clip import load_clip

    folder, run, _ = probe
    metrics = json.loads((run / "metrics.json").read_text())
    chosen = metrics["history"][0]["c"]
    assert metrics["train_steps"] == 0 and len(metrics["history"][0]["tried"]) == 7 + 2 * 2
    clip = load_clip(*model, precision="fp32")
    preprocess = T.Compose([T.Resize(clip.image_size, interpolation=T.InterpolationMode.BICUBIC),
                            T.CenterCrop(clip.image_size), T.ToTensor(), T.Normalize(clip.mean, clip.std)])
    paths = sorted((folder / "train").rglob("*.png"))
    images = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        features = clip.model.encode_image(images).numpy().astype(np.float64)  # open_clip's own, unnormalised
    labels = np.array([CLASSES.index(p.parent.name) for p in paths])
    reference = LogisticRegression(solver="lbfgs", max_iter=1000, C=chosen).fit(features, labels)
    tensors = load_file(str(run / "prompts.safetensors"))
    assert set(tensors) == {"weight", "bias"} and tensors["weight"].shape == (3, clip.embed_dim)
    assert np.allclose(tensors["weight"].numpy(), reference.coef_, atol=1e-4)
    assert np.allclose(tensors["bias"].numpy(), reference.intercept_, atol=1e-4)


def test_its_artifact_evaluates_and_predicts_but_serves_no_other_classes(probe, tmp_path, capsys):
    folder, run, weights = probe
    capsys.readouterr()
    trained = json.loads((run / "metrics.json").read_text())["accuracy"]
    artifact = str(run / "prompts.safetensors")
    assert main(["eval", *weights, "--prompts", artifact, "--dataset", "imagefolder", "--root", str(folder), "--workers", "0",
                 "--no-progress"]) == 0
    assert f"accuracy: {trained:.2f}%" in capsys.readouterr().out
    image = str(next((folder / "test" / "bee").glob("*.png")))
    assert main(["predict", *weights, "--prompts", artifact, image, "--top-k", "2"]) == 0
    assert capsys.readouterr().out.startswith(f"{image}: ")
    assert main(["eval", *weights, "--prompts", artifact, "--dataset", "imagefolder", "--root", str(folder), "--classes", "new",
                 "--workers", "0", "--no-progress"]) == 2
    assert "a linear probe is fitted to its 3 training classes and cannot serve other classes" in capsys.readouterr().err
    assert main(["export", *weights, "--prompts", artifact, "--out", str(tmp_path / "head.safetensors")]) == 2
    assert "already a head on CLIP's unnormalised image features" in capsys.readouterr().err


def test_a_task_without_validation_images_is_refused_before_fitting(tmp_path, model, capsys):
    folder = make_image_folder(tmp_path / "data", CLASSES, {"train": 2, "test": 1})
    assert main(train_args("linear_probe", folder, tmp_path / "run", model, extra=("--shots", "0"))) == 2
    assert "chooses its regularisation on the validation split" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_with_no_halving_the_best_of_the_initial_search_is_kept_without_refitting():
    from metaprompt.methods.linear_probe import INITIAL_SEARCH, search_c

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 4)
    features = rng.normal(0, 1, (12, 8)) + labels[:, None]
    clf, fit = search_c((features, labels), (features[::2], labels[::2]), steps=0)
    assert [c for c, _ in fit.tried] == list(INITIAL_SEARCH)  # seven fits, none repeated
    best = max(range(7), key=lambda i: (fit.tried[i][1], -i))  # the first of the best, as np.argmax
    assert fit.c == INITIAL_SEARCH[best] and clf.C == fit.c
