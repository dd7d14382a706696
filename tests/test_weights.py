"""Where CLIP weights come from: OpenAI's checkpoint files (TorchScript archive and state dict), the
activation the weights need, and files that are refused."""
from __future__ import annotations

import gzip
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from open_clip.transformer import QuickGELU
from torch import nn

from metaprompt.clip import load_clip
from metaprompt.errors import MetapromptError
from metaprompt.weights import is_torchscript, quick_gelu_for, read_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "tiny_openai_clip"
CONFIG = f"{FIXTURE}.json"


class Holder(nn.Module):
    """A module that only holds tensors, to script into a TorchScript archive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def torchscript_archive(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A TorchScript archive whose state dict is ``state`` (as OpenAI's ViT-B-16.pt's is OpenAI's weights)."""
    root = Holder()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        module = root
        for part in parents:
            if not hasattr(module, part):
                module.add_module(part, Holder())
            module = getattr(module, part)
        module.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))
    return path


@pytest.fixture(scope="module")
def openai_state_dict_file(tmp_path_factory) -> Path:
    """The fixture CLIP as OpenAI's state dict: fp16 weights and input_resolution / context_length / vocab_size."""
    path = tmp_path_factory.mktemp("openai") / "tiny_openai_clip.pt"
    with gzip.open(f"{FIXTURE}.pt.gz", "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="module")
def openai_torchscript_file(openai_state_dict_file, tmp_path_factory) -> Path:
    state = torch.load(openai_state_dict_file, weights_only=True)
    return torchscript_archive(state, tmp_path_factory.mktemp("jit") / "ViT-B-16.pt")


def features(clip) -> torch.Tensor:
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    text = clip.tokenize(["a photo of a sea lion.", "a photo of a red fox."])
    with torch.no_grad():
        return torch.cat([clip.model.encode_image(images), clip.model.encode_text(text)])


def test_openai_torchscript_archive_loads_as_the_state_dict_does(openai_state_dict_file, openai_torchscript_file):
    assert is_torchscript(openai_torchscript_file) and not is_torchscript(openai_state_dict_file)
    checkpoint = read_checkpoint(openai_torchscript_file)
    assert checkpoint.openai and checkpoint.torchscript and "input_resolution" not in checkpoint.state_dict
    from_archive, from_state_dict = load_clip(CONFIG, str(openai_torchscript_file)), load_clip(CONFIG, str(openai_state_dict_file))
    assert torch.equal(features(from_archive), features(from_state_dict))
    activations = {type(m) for m in from_archive.model.modules() if type(m).__name__ in ("GELU", "QuickGELU")}
    assert activations == {QuickGELU}


def test_openai_weights_with_gelu_would_change_every_feature(openai_state_dict_file):
    """What QuickGELU is for: the same OpenAI weights with the config's GELU give other features."""
    import open_clip

    right = load_clip(CONFIG, str(openai_state_dict_file))
    open_clip.add_model_config(CONFIG)
    wrong = open_clip.create_model("tiny_openai_clip")  # the config's GELU
    wrong.load_state_dict(right.model.state_dict())
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert (wrong.encode_image(images) - right.model.encode_image(images)).abs().max() > 1e-3


@pytest.mark.parametrize("arch, tag, quick_gelu, warns", [
    ("ViT-B-16", "openai", True, False),                      # OpenAI's weights: QuickGELU, whatever the config says
    ("ViT-B-16-quickgelu", "openai", True, False),
    ("ViT-B-16", "laion2b_s34b_b88k", False, False),           # trained with GELU: the config's GELU
    ("ViT-B-16-quickgelu", "laion2b_s34b_b88k", True, True),   # the name forces QuickGELU on GELU weights: said so
    ("ViT-B-32", "laion400m_e32", True, True),                 # the registry says QuickGELU: used, and said so
    ("ViT-B-16", None, False, False),                          # random weights: the config
])
def test_the_activation_follows_the_weights(arch, tag, quick_gelu, warns):
    warnings: list[str] = []
    assert quick_gelu_for(arch, tag, openai_weights=tag == "openai", warn=warnings.append) is quick_gelu
    assert len(warnings) == int(warns)
    assert all("\n" not in w for w in warnings)


def test_the_openai_tag_builds_quick_gelu(monkeypatch):
    """Without a download: create_model is asked for QuickGELU for ViT-B-16 + openai."""
    import open_clip

    asked = {}

    def create_model(arch, **kwargs):
        asked.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(open_clip, "create_model", create_model)
    with pytest.raises(MetapromptError):
        load_clip("ViT-B-16", "openai")
    assert asked["force_quick_gelu"] is True and asked["pretrained"] == "openai"


def test_a_pickle_of_python_objects_is_refused_without_running_it(tmp_path):
    ran = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (ran,))

    bad = tmp_path / "weights.pt"
    with open(bad, "wb") as f:
        pickle.dump({"visual.proj": Payload()}, f)
    with pytest.raises(MetapromptError, match="holds pickled Python objects, which are not read"):
        read_checkpoint(bad)
    assert not ran.exists()


def test_a_checkpoint_of_another_architecture_names_what_does_not_fit(openai_state_dict_file, tiny_model_name):
    with pytest.raises(MetapromptError, match="does not fit model 'tiny-vit'.*pass the --model its weights were"):
        load_clip(tiny_model_name, str(openai_state_dict_file))


def test_a_state_dict_that_does_not_say_whose_weights_it_holds_is_named_with_the_quickgelu_variant(tmp_path, capsys):
    """Issue 21, item 6: a GELU config with a -quickgelu twin and a plain state-dict file: one line naming it."""
    import json

    import open_clip

    from helpers import TINY_CONFIG, tiny_checkpoint
    from metaprompt.clip import load_clip

    plain, twin = tmp_path / "tinyq.json", tmp_path / "tinyq-quickgelu.json"
    plain.write_text(json.dumps(TINY_CONFIG))
    twin.write_text(json.dumps({**TINY_CONFIG, "quick_gelu": True}))
    open_clip.add_model_config(twin)
    state_dict = tiny_checkpoint(plain)
    capsys.readouterr()
    load_clip(str(plain), str(state_dict))
    lines = [line for line in capsys.readouterr().err.splitlines() if "does not say whose weights" in line]
    assert len(lines) == 1 and "pass --model tinyq-quickgelu" in lines[0]
    load_clip(str(twin), str(state_dict))  # the QuickGELU variant named: nothing to say
    assert "does not say whose weights" not in capsys.readouterr().err
