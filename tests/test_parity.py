"""Parity with the released code of every method, against goldens that the released code itself produced.

tests/goldens/ was written by ``python tools/parity/make_goldens.py --refs REFS`` (see tools/parity/README.md
and goldens/MANIFEST.json for the reference commits): each released trainer ran on the fixture CLIP
(tests/fixtures/tiny_openai_clip.pt.gz, a small random CLIP in OpenAI's checkpoint format), gave the eval
logits of fixed images over class names with underscores, and trained its tensors for a few steps of its own
``forward_backward``. Here the same fixture file goes through this project's loader (which must build
QuickGELU for OpenAI's weights), the same initial tensors into this project's methods, and the results must
be equal in fp32: within 1e-5 of each tensor's largest magnitude. No reference code is needed here.
"""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from metaprompt.clip import load_clip
from metaprompt.config import preset_names, resolve
from metaprompt.engine import lr_at_epoch
from metaprompt.methods import Batch, build_method, make_config

HERE = Path(__file__).parent
GOLDENS = HERE / "goldens"
FIXTURE = HERE / "fixtures" / "tiny_openai_clip"
IMAGE_SIZE = 224
RELATIVE = 1e-5
CASES = sorted(p.stem for p in GOLDENS.glob("*.safetensors") if p.stem != "inputs")


def golden(name: str) -> tuple[dict, dict, dict[str, torch.Tensor]]:
    """(the case as tools/parity/cases.py defines it, what the run recorded, its tensors)."""
    with safe_open(str(GOLDENS / f"{name}.safetensors"), framework="pt") as f:
        meta = f.metadata()
        return json.loads(meta["case"]), json.loads(meta["golden"]), {k: f.get_tensor(k) for k in f.keys()}


def images(indices: list[int]) -> torch.Tensor:
    """The case's images: the stored 28 px noise upsampled by repetition, exactly as the golden run did."""
    with safe_open(str(GOLDENS / "inputs.safetensors"), framework="pt") as f:
        small = f.get_tensor("images")[indices]
    factor = IMAGE_SIZE // small.shape[-1]
    return small.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def assert_equal(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    assert ours.shape == reference.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(reference.shape)}"
    scale = reference.abs().max().clamp(min=1e-12)
    error = float((ours.float() - reference).abs().max() / scale)
    assert error <= RELATIVE, f"{what}: max |ours - released| = {error:.2e} of the released tensor's scale"


@pytest.fixture(scope="module")
def fixture_clip(tmp_path_factory):
    """The fixture CLIP through this project's loader: the OpenAI-format .pt file, with its model config."""
    pt = tmp_path_factory.mktemp("fixture") / "tiny_openai_clip.pt"
    with gzip.open(f"{FIXTURE}.pt.gz", "rb") as src, open(pt, "wb") as dst:
        shutil.copyfileobj(src, dst)
    torch.manual_seed(0)
    return load_clip(f"{FIXTURE}.json", str(pt))


def build(spec: dict, tensors: dict, clip):
    method = build_method(spec["method"], clip, spec["classes"], make_config(spec["method"], spec["config"]),
                          dataset=spec["dataset"])
    init = {k[len("init."):]: v for k, v in tensors.items() if k.startswith("init.")}
    if init:
        method.load_trained_tensors(init, source="golden")
    return method


def batch(spec: dict, meta: dict, step: int) -> Batch:
    domains = spec.get("domains")
    return Batch(images(spec["step_images"][step]), torch.tensor(meta["labels"][step]),
                 torch.tensor(domains[step]) if domains else torch.zeros(len(meta["labels"][step]), dtype=torch.long))


def optimizer(method, spec: dict) -> torch.optim.Optimizer:
    """The released trainers' optimiser: Dassl's SGD, momentum 0.9, weight decay 5e-4, at the case's LR."""
    return torch.optim.SGD(method.trainable_parameters(), lr=spec["lr"], momentum=0.9, weight_decay=5e-4)


def test_goldens_are_present():
    assert len(CASES) >= 16 and (GOLDENS / "MANIFEST.json").is_file()


@pytest.mark.parametrize("name", CASES)
def test_eval_logits_equal_the_released_code(name, fixture_clip):
    spec, _, tensors = golden(name)
    method = build(spec, tensors, fixture_clip)
    with method.evaluation():
        logits = method.model_inference(images(spec.get("eval", list(range(4)))))
    assert_equal(logits, tensors["eval.logits"], f"{name} eval logits")


@pytest.mark.parametrize("name", [n for n in CASES if golden(n)[0]["steps"] and not golden(n)[0].get("record_episodes")])
def test_trained_tensors_equal_the_released_trainer(name, fixture_clip):
    spec, meta, tensors = golden(name)
    method = build(spec, tensors, fixture_clip)
    method.reset_random_state(spec.get("seed", 1))
    opt = optimizer(method, spec)
    method.train()
    for step in range(spec["steps"]):
        method.forward_backward(batch(spec, meta, step), opt)
        if spec.get("epoch_per_step"):  # each step ends an epoch, as the golden run was told
            method.on_epoch_end(step, spec["steps"])
    trained = method.trained_tensors()
    for key in (k[len("trained."):] for k in tensors if k.startswith("trained.")):
        assert_equal(trained[key], tensors[f"trained.{key}"], f"{name} trained {key}")


def test_clean_cross_domain_update_shares_the_released_first_episode(fixture_clip):
    """Clean and released differ from the second episode on (the released restore does not undo the inner
    step); the in-domain step and the first episode's meta-test gradient must equal the released trainer's."""
    spec, meta, tensors = golden("metaprompt_dg_clean")
    method = build(spec, tensors, fixture_clip)
    opt = optimizer(method, spec)
    method.train()
    b = batch(spec, meta, 0)
    frozen, _, _ = method.in_domain_update(b, opt)
    assert_equal(method.text_prompts.detach(), tensors["in_domain.text_prompts"], "in-domain text prompts")
    assert_equal(method.visual_prompts.detach(), tensors["in_domain.visual_prompts"], "in-domain visual prompts")
    grads = method.meta_update(b, frozen, opt, spec["lr"])
    assert len(grads) == len([k for k in tensors if k.startswith("episode")]) == 4
    assert_equal(grads[0], tensors["episode0.grad"], "first episode's meta-test gradient")


def test_maple_deep_couplings_start_identical_as_released(fixture_clip):
    """The released MaPLe deep-copies one Linear for all deep layers (its built tensors say so), and so do we."""
    spec, _, tensors = golden("maple")
    assert torch.equal(tensors["init.couplings.1.weight"], tensors["init.couplings.2.weight"])
    method = build_method("maple", fixture_clip, spec["classes"], make_config("maple", spec["config"]))
    couplings = method.couplings
    assert torch.equal(couplings[1].weight, couplings[2].weight) and torch.equal(couplings[1].bias, couplings[2].bias)
    assert not torch.equal(couplings[0].weight, couplings[1].weight)


LPCLIP = GOLDENS / "lpclip" / "linear_probe.safetensors"


@pytest.mark.parametrize("shots", [1, 2, 4, 8, 16])
def test_linear_probe_chooses_the_c_and_predictions_of_lpclip(shots):
    """CoOp's lpclip/linear_probe.py on fixed features (tools/parity/lpclip_worker.py): for each shot count, the
    same few-shot features through this project's search give its C and its test predictions."""
    from metaprompt.methods.linear_probe import search_c

    with safe_open(str(LPCLIP), framework="pt") as f:
        t, chosen = {k: f.get_tensor(k).numpy() for k in f.keys()}, json.loads(f.metadata()["chosen_c"])
    clf, fit = search_c((t[f"{shots}.train_x"], t[f"{shots}.train_y"]), (t[f"{shots}.val_x"], t[f"{shots}.val_y"]),
                        steps=8)
    assert fit.c == pytest.approx(chosen[str(shots)], rel=1e-12)
    assert (clf.predict(t["test_x"]) == t[f"{shots}.test_pred"]).all()
    assert len(fit.tried) == 7 + 2 * 8


def test_the_loader_builds_quick_gelu_for_openai_weights(fixture_clip):
    from open_clip.transformer import QuickGELU

    activations = {type(m) for m in fixture_clip.model.modules() if type(m).__name__ in ("QuickGELU", "GELU")}
    assert activations == {QuickGELU}


# ------------------------------------------------------------------------------------ configs and schedules

def table(name: str) -> dict:
    return json.loads((GOLDENS / f"{name}.json").read_text())


def preset_config(key: str):
    """A shipped preset (``name``) or one of its variants (``name@index``) as a run on a dataset gets it."""
    name, _, index = key.partition("@")
    cfg = resolve(preset=name)
    dataset = "caltech101"  # no preset has a variant for it
    if index:
        variant = cfg.variants[int(index)]
        dataset = variant.datasets[0] if variant.datasets else dataset
        cfg = cfg.with_values({"train.shots": variant.shots[0]}) if variant.shots else cfg
    return cfg.for_task(dataset)


def released_n_ctx(values: dict, node: str) -> int:
    """CoOp's / CoCoOp's context length: CTX_INIT's words when set (the released code ignores N_CTX then)."""
    ctx_init = values[f"TRAINER.{node}.CTX_INIT"]
    return len(ctx_init.split(" ")) if ctx_init else values[f"TRAINER.{node}.N_CTX"]


TRAIN_KEYS = {"lr": "OPTIM.LR", "epochs": "OPTIM.MAX_EPOCH", "warmup_epochs": "OPTIM.WARMUP_EPOCH",
              "warmup_lr": "OPTIM.WARMUP_CONS_LR", "momentum": "OPTIM.MOMENTUM", "weight_decay": "OPTIM.WEIGHT_DECAY",
              "batch_size": "DATALOADER.TRAIN_X.BATCH_SIZE", "test_batch_size": "DATALOADER.TEST.BATCH_SIZE"}
METHOD_KEYS = {
    "coop": {"ctx_init": "TRAINER.COOP.CTX_INIT", "class_specific": "TRAINER.COOP.CSC",
             "class_token_position": "TRAINER.COOP.CLASS_TOKEN_POSITION"},
    "cocoop": {"ctx_init": "TRAINER.COCOOP.CTX_INIT"},
    "vpt": {"n_vis": "TRAINER.VPT.N_CTX_VISION", "depth": "TRAINER.VPT.PROMPT_DEPTH_VISION"},
    "ivlp": {"n_ctx": "TRAINER.IVLP.N_CTX_TEXT", "n_vis": "TRAINER.IVLP.N_CTX_VISION", "ctx_init": "TRAINER.IVLP.CTX_INIT",
             "text_depth": "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "vision_depth": "TRAINER.IVLP.PROMPT_DEPTH_VISION"},
    "maple": {"n_ctx": "TRAINER.MAPLE.N_CTX", "depth": "TRAINER.MAPLE.PROMPT_DEPTH", "ctx_init": "TRAINER.MAPLE.CTX_INIT"},
    "promptsrc": {"n_ctx": "TRAINER.PROMPTSRC.N_CTX_TEXT", "n_vis": "TRAINER.PROMPTSRC.N_CTX_VISION",
                  "ctx_init": "TRAINER.PROMPTSRC.CTX_INIT", "text_depth": "TRAINER.PROMPTSRC.PROMPT_DEPTH_TEXT",
                  "vision_depth": "TRAINER.PROMPTSRC.PROMPT_DEPTH_VISION",
                  "text_loss_weight": "TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT",
                  "image_loss_weight": "TRAINER.PROMPTSRC.IMAGE_LOSS_WEIGHT",
                  "gpa_mean": "TRAINER.PROMPTSRC.GPA_MEAN", "gpa_std": "TRAINER.PROMPTSRC.GPA_STD"},
    "metaprompt": {"n_ctx": "TRAINER.META.N_CTX", "n_vis": "TRAINER.META.N_PRO", "text_depth": "TRAINER.META.LAYERS",
                   "vision_depth": "TRAINER.META.LAYERS", "meta_step": "TRAINER.META.META_STEP"},
}


COMMENTED_VALUES = {"promptsrc_fewshot@0": {"gpa_mean": 45.0, "gpa_std": 5.0}}
"""Values a released file gives in a comment, for some datasets (PromptSRC's few-shot config: "Use the below
configuration for: StanfordCars, Flowers102, FGVCAircraft, DTD and EuroSAT")."""


def test_every_preset_that_follows_a_released_file_was_read_from_it():
    followed = {key for key in table("lr_schedules") if preset_config(key).follows}
    followed |= {name for name in preset_names() if resolve(preset=name).follows}
    assert followed == set(table("released_configs"))


@pytest.mark.parametrize("key", sorted(table("released_configs")))
def test_preset_values_equal_the_released_config_file(key):
    """Every value a preset takes from the released config file it names equals that file's (read by Dassl's
    config loader with the repository's own defaults), including each variant's."""
    released = table("released_configs")[key]
    values, cfg = released["values"], preset_config(key)
    assert cfg.follows.endswith(" " + released["follows"])
    assert cfg.model == values["MODEL.BACKBONE.NAME"].replace("/", "-")  # ViT-B/16 is open_clip's ViT-B-16
    assert values["OPTIM.NAME"] == "sgd" and values["OPTIM.LR_SCHEDULER"] == "cosine"
    assert values["OPTIM.WARMUP_TYPE"] == "constant"
    assert values["INPUT.TRANSFORMS"] == ["random_resized_crop", "random_flip", "normalize"]
    assert values["INPUT.RRCROP_SCALE"] == [cfg.train.crop_scale_min, 1.0]
    trained = cfg.method != "zeroshot"
    for ours, theirs in TRAIN_KEYS.items():
        if trained or ours == "test_batch_size":
            assert getattr(cfg.train, ours) == pytest.approx(values[theirs]), f"train.{ours} vs {theirs}"
    method = cfg.method_config
    for ours, theirs in METHOD_KEYS.get(cfg.method, {}).items():
        if key in COMMENTED_VALUES and ours in COMMENTED_VALUES[key]:  # the file's comment gives them (checked below)
            continue
        assert getattr(method, ours) == values[theirs], f"method.{ours} vs {theirs}"
    for ours, value in COMMENTED_VALUES.get(key, {}).items():
        assert getattr(method, ours) == value, f"method.{ours}: the released file's comment says {value}"
    if cfg.method in ("coop", "cocoop"):
        node = cfg.method.upper()
        assert (len(method.ctx_init.split(" ")) if method.ctx_init else method.n_ctx) == released_n_ctx(values, node)
    if cfg.method == "kgcoop":  # CTX_INIT True: the released learner then always starts from "a photo of a"
        assert values["TRAINER.COOP.CTX_INIT"] is True and method.ctx_init == "a photo of a"
        assert values["TRAINER.COOP.CSC"] is False and not method.class_specific
        assert values["TRAINER.COOP.CLASS_TOKEN_POSITION"] == method.class_token_position
        # W is the released script's argument (8.0, scripts/run.sh), not the config file's default (1.0)
        assert values["TRAINER.COOP.W"] == 1.0 and method.w == 8.0
    if cfg.method == "metaprompt":
        released_fp16 = values["TRAINER.META.PREC"] == "fp16"
        assert released_fp16 and cfg.train.precision == ("fp16-pure" if method.compat == "released" else "auto")


@pytest.mark.parametrize("key", sorted(k for k in table("released_configs") if preset_config(k).method != "zeroshot"))
def test_lr_of_every_epoch_equals_dassl_scheduler_on_the_released_values(key):
    cfg = preset_config(key).train
    assert [lr_at_epoch(cfg, e) for e in range(cfg.epochs)] == pytest.approx(
        table("released_configs")[key]["lr_per_epoch"], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("key", sorted(table("lr_schedules")))
def test_lr_of_every_epoch_equals_dassl_scheduler_on_every_shipped_schedule(key):
    """The schedule formula on every shipped preset's own values (the world presets included)."""
    expected = table("lr_schedules")[key]
    cfg = preset_config(key).train
    assert (cfg.lr, cfg.epochs, cfg.warmup_epochs, cfg.warmup_lr) == tuple(
        expected[k] for k in ("lr", "epochs", "warmup_epochs", "warmup_lr"))
    assert [lr_at_epoch(cfg, e) for e in range(cfg.epochs)] == pytest.approx(expected["lr_per_epoch"], rel=1e-12,
                                                                             abs=1e-15)
