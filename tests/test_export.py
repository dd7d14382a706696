"""`metaprompt export`: the head, used by plain open_clip with the lines docs/export.md shows, gives the logits
`metaprompt eval` gives; methods it cannot export say why."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from metaprompt.cli import main
from helpers import make_image_folder, train_args

DOC = Path(__file__).resolve().parents[1] / "docs" / "export.md"
CLASSES = ["ant", "bee", "cat"]


def doc_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/export.md should hold one Python block"
    return blocks[0]


@pytest.mark.parametrize("method, extra", [("coop", ["n_ctx=2"]), ("kgcoop", ["n_ctx=2"]), ("zeroshot", [])])
def test_the_documented_lines_with_open_clip_alone_give_the_eval_logits(method, extra, tmp_path, model,
                                                                        monkeypatch):
    import open_clip

    folder = make_image_folder(tmp_path / "data", CLASSES, {"train": 2, "test": 2})
    run = tmp_path / "run"
    assert main(train_args(method, folder, run, model, "epochs=1", *extra, extra=("--shots", "0"))) == 0
    head = tmp_path / "head.safetensors"
    assert main(["export", "--model", model[0], "--pretrained", model[1], "--prompts", str(run / "prompts.safetensors"), "--out", str(head), "--device", "cpu"]) == 0
    dump = tmp_path / "eval.npz"
    assert main(["eval", "--model", model[0], "--pretrained", model[1], "--prompts", str(run / "prompts.safetensors"), "--dataset", "imagefolder", "--root",
                 str(folder), "--dump-logits", str(dump), "--workers", "0", "--no-progress"]) == 0
    expected = np.load(dump)
    paths = sorted(str(p) for p in (folder / "test").rglob("*.png"))  # eval's order: classes sorted, then files
    open_clip.add_model_config(model[0])  # the test's custom architecture (docs/export.md says so)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(doc_snippet().replace('["cat.jpg", "dog.jpg"]', repr(paths)), namespace)  # noqa: S102
    logits = namespace["logits"]
    assert torch.allclose(logits, torch.from_numpy(expected["logits"]), atol=1e-4), \
        (logits - torch.from_numpy(expected["logits"])).abs().max()
    assert logits.shape == (len(paths), len(CLASSES))


@pytest.mark.parametrize("method, sets, reason", [
    ("ivlp", ["text_depth=2", "vision_depth=2"], "ivlp prompts the image encoder too"),
    ("vpt", ["depth=2", "n_vis=2"], "vpt prompts the image encoder too"),
    ("cocoop", [], "cocoop's class features depend on each image"),
])
def test_methods_whose_image_side_is_prompted_say_why_they_cannot_be_exported(method, sets, reason, tmp_path, model,
                                                                               capsys):
    folder = make_image_folder(tmp_path / "data", CLASSES, {"train": 2, "test": 1})
    run = tmp_path / "run"
    assert main(train_args(method, folder, run, model, "epochs=1", "max_steps=1", *sets, extra=("--shots", "0"))) == 0
    capsys.readouterr()
    out = tmp_path / "head.safetensors"
    assert main(["export", "--model", model[0], "--pretrained", model[1], "--prompts", str(run / "prompts.safetensors"), "--out", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metaprompt:")]
    assert len(lines) == 1 and "cannot export" in lines[0] and reason in lines[0]
    assert not out.exists()


def test_a_head_for_other_classes_holds_their_features(tmp_path, model):
    from safetensors import safe_open

    folder = make_image_folder(tmp_path / "data", CLASSES, {"train": 2, "test": 1})
    run = tmp_path / "run"
    assert main(train_args("coop", folder, run, model, "epochs=1", "n_ctx=2", extra=("--shots", "0"))) == 0
    head = tmp_path / "head.safetensors"
    assert main(["export", "--model", model[0], "--pretrained", model[1], "--prompts", str(run / "prompts.safetensors"), "--classes", "dog, emu", "--out",
                 str(head)]) == 0
    with safe_open(str(head), framework="pt") as f:
        classifier, meta = f.get_tensor("classifier"), f.metadata()
    assert json.loads(meta["classnames"]) == ["dog", "emu"] and classifier.shape[0] == 2
    assert torch.allclose(classifier.norm(dim=-1), torch.ones(2), atol=1e-6)
