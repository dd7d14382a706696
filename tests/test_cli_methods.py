"""Every method trains a few steps through the CLI on a tiny model and image folder, and its artifact
evaluates on another class list; dumped logits match an independent computation from the tensors."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from metaprompt.artifact import read_artifact
from metaprompt.cli import main
from helpers import make_image_folder, train_args

CLASSES = sorted(["red_star", "blue_circle", "green_square", "yellow_heart", "cat", "dog"])
NAMES = list(CLASSES)  # labels follow the sorted folder names; readers keep them as they are
SMALL = {
    "zeroshot": [],
    "coop": [],
    "kgcoop": ["n_ctx=4"],
    "cocoop": [],
    "vpt": ["depth=3", "n_vis=2"],
    "ivlp": ["text_depth=3", "vision_depth=3"],
    "maple": ["depth=2"],
    "metaprompt": ["text_depth=3", "vision_depth=3"],
    "promptsrc": ["text_depth=3", "vision_depth=3"],
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), CLASSES, {"train": 3, "test": 2})



def method_args(method, folder, out, model, extra=()):
    """Two training steps of ``method`` at its small size, on the base classes, 2 shots."""
    return train_args(method, folder, out, model, "epochs=2", "max_steps=2", "batch_size=2", *SMALL[method], *extra,
                      extra=("--classes", "base", "--shots", "2"))


@pytest.mark.parametrize("method", list(SMALL))
def test_method_trains_and_evaluates_on_other_classes(method, folder, tmp_path, model, capsys):
    out = tmp_path / "run"
    assert main(method_args(method, folder, out, model)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 3 and metrics["num_test"] == 6
    assert metrics["train_steps"] == (0 if method == "zeroshot" else 2)
    art = read_artifact(out / "prompts.safetensors")
    assert art.method == method and art.classnames == NAMES[:3]
    config = (out / "config.yaml").read_text()
    assert f"method: {method}" in config
    capsys.readouterr()
    dump = tmp_path / "new.npz"
    assert main(["eval", "--model", model[0], "--pretrained", model[1], "--prompts", str(out / "prompts.safetensors"), "--dataset", "imagefolder", "--root",
                 str(folder), "--classes", "new", "--dump-logits", str(dump), "--workers", "0", "--no-progress"]) == 0
    assert "accuracy:" in capsys.readouterr().out
    data = np.load(dump)
    assert data["logits"].shape == (6, 3) and list(data["classnames"]) == NAMES[3:]
    assert set(data["labels"].tolist()) == {0, 1, 2}


def test_artifact_holds_only_prompts(folder, tmp_path, model):
    out = tmp_path / "run"
    assert main(method_args("metaprompt", folder, out, model)) == 0
    tensors = load_file(str(out / "prompts.safetensors"))
    assert set(tensors) == {"text_prompts", "visual_prompts"}
    assert tensors["text_prompts"].shape == (3, 2, 48) and tensors["visual_prompts"].shape == (3, 2, 64)


def test_dumped_logits_match_an_independent_computation(folder, tmp_path, model):
    """IVLP logits recomputed from the artifact's raw tensors with plain open_clip modules."""
    import open_clip
    from PIL import Image
    from torchvision import transforms as T

    out = tmp_path / "run"
    assert main(method_args("ivlp", folder, out, model, ["ctx_init=", "n_ctx=2"])) == 0
    dump = tmp_path / "all.npz"
    assert main(["eval", "--model", model[0], "--pretrained", model[1], "--prompts", str(out / "prompts.safetensors"), "--dataset", "imagefolder", "--root",
                 str(folder), "--classes", "all", "--dump-logits", str(dump), "--workers", "0", "--no-progress"]) == 0
    data = np.load(dump)
    t = load_file(str(out / "prompts.safetensors"))
    assert not torch.allclose(t["text_prompts"][1:], torch.zeros(1))

    m = open_clip.create_model(model[0].rsplit("/", 1)[1][:-5], pretrained=model[1]).eval()
    tokenizer = open_clip.get_tokenizer("ViT-B-16")
    names = [c.replace("_", " ") for c in CLASSES]
    tokens = tokenizer([f"X X {n}." for n in names])
    with torch.no_grad():
        x = m.token_embedding(tokens)
        x[:, 1:3] = t["text_prompts"][0]
        x = x + m.positional_embedding
        for i, block in enumerate(m.transformer.resblocks):
            if i > 0:
                x[:, 1:3] = t["text_prompts"][i]
            x = block(x, attn_mask=m.attn_mask)
        text = F.normalize(m.ln_final(x)[torch.arange(len(names)), tokens.argmax(-1)] @ m.text_projection, dim=-1)

        v = m.visual
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
        tf = T.Compose([T.Resize(32, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(32), T.ToTensor(),
                        T.Normalize(mean, std)])
        paths = sorted((folder / "test").glob("*/*.png"), key=lambda p: (CLASSES.index(p.parent.name), int(p.stem)))
        images = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
        h = v.conv1(images).flatten(2).transpose(1, 2)
        h = torch.cat([v.class_embedding.expand(len(paths), 1, -1), h], 1) + v.positional_embedding
        vp = t["visual_prompts"]
        h = v.ln_pre(torch.cat([h, vp[0].expand(len(paths), -1, -1)], 1))
        for i, block in enumerate(v.transformer.resblocks):
            if i > 0:
                h = torch.cat([h[:, :-vp.shape[1]], vp[i].expand(len(paths), -1, -1)], 1)
            h = block(h)
        img = F.normalize(v.ln_post(h[:, 0]) @ v.proj, dim=-1)
        expected = (m.logit_scale.exp() * img @ text.t()).numpy()
    assert np.allclose(data["logits"], expected, atol=1e-4)
    assert data["labels"].tolist() == [CLASSES.index(p.parent.name) for p in paths]


def test_predict_prints_the_probabilities_eval_computes(folder, tmp_path, model, capsys):
    """`metaprompt predict` on the new classes' test images gives, per image, the softmax of the logits that
    `metaprompt eval --dump-logits` wrote for it, classes ranked."""
    out = tmp_path / "run"
    assert main(method_args("ivlp", folder, out, model)) == 0
    artifact, dump = str(out / "prompts.safetensors"), tmp_path / "new.npz"
    assert main(["eval", "--model", model[0], "--pretrained", model[1], "--prompts", artifact, "--dataset", "imagefolder", "--root", str(folder), "--classes", "new",
                 "--dump-logits", str(dump), "--workers", "0", "--no-progress"]) == 0
    data = np.load(dump)
    new = list(data["classnames"])
    images = [str(folder / "test" / name / f"{i}.png") for name in new for i in range(2)]
    capsys.readouterr()
    assert main(["predict", "--model", model[0], "--pretrained", model[1], "--prompts", artifact, *images, "--classes", ",".join(new), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(images)
    probabilities = torch.from_numpy(data["logits"]).softmax(-1) * 100
    for line, image, row in zip(lines, images, probabilities):
        path, ranked = line.split(": ", 1)
        printed = [item.rsplit(" ", 1) for item in ranked.split(", ")]
        assert path == image and [name for name, _ in printed] == [new[i] for i in row.argsort(descending=True)]
        for name, percent in printed:
            assert float(percent.rstrip("%")) == pytest.approx(float(row[new.index(name)]), abs=0.051)


def test_predict_names_what_it_cannot_use(folder, tmp_path, model, capsys):
    out = tmp_path / "run"
    assert main(method_args("coop", folder, out, model)) == 0
    artifact = str(out / "prompts.safetensors")
    capsys.readouterr()
    assert main(["predict", "--model", model[0], "--pretrained", model[1], "--prompts", artifact, str(tmp_path / "nowhere.png")]) == 2
    assert f"no such image file: {tmp_path / 'nowhere.png'}" in capsys.readouterr().err
    image = str(folder / "test" / "cat" / "0.png")
    assert main(["predict", "--model", model[0], "--pretrained", model[1], "--prompts", artifact, image, "--top-k", "0"]) == 2
    assert "--top-k must be at least 1, got 0" in capsys.readouterr().err
    assert main(["predict", "--model", model[0], "--pretrained", model[1], "--prompts", artifact, image, "--top-k", "9"]) == 0  # at most the classes there are
    assert len(capsys.readouterr().out.split(": ", 1)[1].split(", ")) == 3
