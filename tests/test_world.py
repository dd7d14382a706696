"""The offline world: rendering, layout and split files, tokenizer, pretraining and the shipped model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from metaprompt.cli import main as cli_main
from metaprompt.errors import MetapromptError
from metaprompt.world import CLASS_FOLDERS, CLASSNAMES, DOMAINS, load_world_clip, pretrain, render_world
from metaprompt.world.render import BASE_TO_NEW_DOMAINS, MARKER, image_rng, render_image
from metaprompt.world.tokenizer import PAD_ID, SOT_ID, UNK_ID, WorldTokenizer

TINY = dict(seed=3, train_per_class=1, test_per_class=1, val_per_class=1, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render_world(tmp_path_factory.mktemp("data") / "world", **TINY)


def test_render_is_byte_identical_for_a_seed(tiny_world: Path, tmp_path: Path) -> None:
    again = render_world(tmp_path / "world", **TINY)
    assert _files(again) == _files(tiny_world)
    other = render_image("photo", 0, image_rng(4, "train", "photo", 0, 0))
    assert not np.array_equal(other, render_image("photo", 0, image_rng(3, "train", "photo", 0, 0)))


def test_rendering_in_two_processes_writes_the_same_bytes(tiny_world: Path, tmp_path: Path) -> None:
    parallel = render_world(tmp_path / "world", **TINY, processes=2)
    assert _files(parallel) == _files(tiny_world)


def test_layout_and_split_files_agree_on_labels(tiny_world: Path) -> None:
    assert list(CLASS_FOLDERS) == sorted(CLASS_FOLDERS) and len(CLASS_FOLDERS) == 60
    for domain in DOMAINS:
        assert sorted(p.name for p in (tiny_world / domain).iterdir()) == list(CLASS_FOLDERS)
        for split in ("train", "test"):
            lines = (tiny_world / "splits" / f"{domain}_{split}.txt").read_text().splitlines()
            assert len(lines) == 60
            for line in lines:
                relpath, label = line.split(" ")
                d, folder, name = relpath.split("/")
                assert (d, CLASS_FOLDERS[int(label)]) == (domain, folder) and name.startswith(split)
                assert (tiny_world / relpath).is_file()
    zhou = json.loads((tiny_world / "split_zhou_World.json").read_text())
    assert {k: len(v) for k, v in zhou.items()} == {"train": 60, "val": 60, "test": 60}
    for relpath, label, classname in (e for split in zhou.values() for e in split):
        assert relpath.split("/")[0] in BASE_TO_NEW_DOMAINS and (tiny_world / relpath).is_file()
        assert relpath.split("/")[1] == CLASS_FOLDERS[label] and classname == CLASS_FOLDERS[label]
    assert json.loads((tiny_world / MARKER).read_text())["seed"] == 3


def test_base_and_new_classes_share_shapes_but_not_colours() -> None:
    base, new = CLASSNAMES[:30], CLASSNAMES[30:]
    assert {c.split()[1] for c in base} == {c.split()[1] for c in new}
    assert not {c.split()[0] for c in base} & {c.split()[0] for c in new}


def test_finished_render_is_kept_and_an_interrupted_one_redone(tmp_path: Path) -> None:
    world = render_world(tmp_path / "world", **TINY)
    stray = world / "photo" / CLASS_FOLDERS[0] / "stray.png"
    stray.write_bytes(b"left over")
    render_world(world, **TINY)
    assert stray.exists()  # marker matches: nothing rendered again
    (world / MARKER).unlink()
    render_world(world, **TINY)
    assert not stray.exists() and (world / MARKER).exists()


def test_render_rejects_empty_splits(tmp_path: Path) -> None:
    with pytest.raises(MetapromptError, match="at least 1 train"):
        render_world(tmp_path / "world", train_per_class=0, progress=False)


def test_tokenizer_ids_and_unknown_words() -> None:
    tok = WorldTokenizer.from_texts(["a crimson star", "a photo of a {}."])
    ids = tok(["X X X X red star.", "a crimson zebra"])
    assert ids.dtype == torch.long and ids.shape == (2, tok.context_length) and tok.context_length >= 24
    assert (ids[:, 0] == SOT_ID).all() and (ids.argmax(1) == torch.tensor([8, 4])).all()
    assert int(ids.max()) == tok.eot_id == tok.vocab_size - 1
    assert ids[0, 1:5].unique().numel() == 1 and int(ids[0, 1]) != UNK_ID  # "X" is one known token
    assert int(ids[0, 5]) == UNK_ID  # "red" is not in this vocabulary
    assert int(ids[1, 3]) == UNK_ID and (ids[1, 5:] == PAD_ID).all()
    for text in ("a photo of a .", "a photo of a", ","):
        assert UNK_ID not in tok.encode(text)


def test_pretrain_writes_a_loadable_deterministic_checkpoint(tmp_path: Path) -> None:
    kwargs = dict(seed=0, steps=2, batch_size=16, pool_per_class=1, progress=False)
    first, second = pretrain(tmp_path / "a.safetensors", **kwargs), pretrain(tmp_path / "b.safetensors", **kwargs)
    with safe_open(str(first), "pt") as a, safe_open(str(second), "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
        meta = a.metadata()
        assert a.get_tensor("text_projection").dtype == torch.float16
    assert json.loads(meta["steps"]) == 2 and "vision_cfg" in json.loads(meta["config"])
    clip = load_world_clip(first)
    images = torch.randn(3, 3, clip.image_size, clip.image_size)
    with torch.no_grad():
        assert clip.model.encode_image(images).shape == (3, 128)
        assert clip.model.encode_text(clip.tokenizer(["a red star.", "a photo of a blue ring."])).shape == (2, 128)


def test_shipped_model_loads_and_recognises_cartoons() -> None:
    clip = load_world_clip()
    model = clip.model
    assert not model.training and model.text_projection.dtype == torch.float32
    assert model.text_pool_type == "argmax" and model.visual.pool_type == "tok"
    assert len(clip.mean) == len(clip.std) == 3
    images = np.stack([render_image("cartoon", label, image_rng(99, "test", "cartoon", label, 0))
                       for label in range(len(CLASSNAMES))])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(clip.mean).view(1, 3, 1, 1)) / torch.tensor(clip.std).view(1, 3, 1, 1)
    with torch.no_grad():
        image = model.encode_image(x, normalize=True)
        text = model.encode_text(clip.tokenizer([f"a photo of a {c}." for c in CLASSNAMES]), normalize=True)
    accuracy = ((image @ text.T).argmax(1) == torch.arange(len(CLASSNAMES))).float().mean().item()
    assert accuracy > 0.3  # chance is 1/60


def test_cli_renders_a_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["world", "render", "--out", str(tmp_path / "world"), "--seed", "3",
                     "--train-per-class", "1", "--test-per-class", "1", "--val-per-class", "1"])
    assert code == 0 and "rendered" in capsys.readouterr().out
    assert json.loads((tmp_path / "world" / MARKER).read_text())["train_per_class"] == 1
