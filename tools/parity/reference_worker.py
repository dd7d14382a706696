"""One reference repository's goldens, in a process of its own (make_goldens.py starts it).

For each case of cases.py that belongs to the repository: build the released trainer on the fixture CLIP
(its initial tensors are what the reference builds after ``torch.manual_seed(case seed)``), record the
eval-mode logits of the fixed images over the case's classes, then run the trainer's own ``forward_backward``
on the fixed batches and record the trained tensors. Tensors are renamed to this project's artifact names
(``text_prompts`` [depth, n, d] and so on) so that the test can load them directly.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
import cases as case_table  # noqa: E402
import reference_env as env  # noqa: E402
from metaprompt.dassl_checkpoint import RELEASED_NAMES, released_target, stacked  # noqa: E402

HALF_ROUNDING = "none"
"""The released fp32 paths' ``.half()`` of fp32 tensors: ``none`` (the goldens: ``env.no_half_rounding``, the fp32
computation this project does), ``released`` (as the released code runs), or ``values`` (values rounded to fp16,
dtype kept: ``env.half_rounding_in_fp32``). rounding_worker.py compares them."""

TRAINER_METHODS = {"CoOp": "coop", "CoCoOp": "cocoop", "VPT": "vpt", "IVLP": "ivlp", "MaPLe": "maple",
                   "KgCoOp": "kgcoop", "PromptSRC": "promptsrc", "Meta_B2N": "metaprompt", "Meta_DG": "metaprompt"}
"""Released trainer -> this project's method, whose released parameter names metaprompt.dassl_checkpoint maps
(the same table `metaprompt import` reads released checkpoints with)."""


def rules_for(spec: dict) -> list:
    method = TRAINER_METHODS[spec["trainer"]]
    return RELEASED_NAMES["coop-csc" if spec["config"].get("class_specific") else method]


def trainable(model: torch.nn.Module, rules: list) -> dict[str, tuple[torch.nn.Parameter, tuple[str, int | None]]]:
    """Released name -> (parameter, our slot) for every trained parameter; each must have a slot."""
    found = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        target = released_target(rules, name)
        if target is None:
            raise SystemExit(f"reference parameter {name} has no name in this project (extend RELEASED_NAMES "
                             "in metaprompt/dassl_checkpoint.py)")
        found[name] = (p, target)
    return found


def save_released_checkpoint(t, directory: Path) -> None:
    """The trainer's own ``save_model`` (Dassl's) into ``directory``, as at the end of training (epoch 1), with
    the frozen CLIP parameters left out: out of each model's state dict, and out of the optimizer, which Dassl
    builds on every parameter of the registered model and whose object the pickled LR scheduler holds. They are
    the fixture's weights, which the importer ignores, and would make each golden megabytes. Everything else
    (trained tensors, buffers, the optimizer's and scheduler's state and objects, epoch, val_result) is as the
    trainer writes it."""
    restore = []
    for name in t.get_model_names():
        model, optim = t._models[name], t._optims[name]
        frozen_ids = {id(p) for p in model.parameters() if not p.requires_grad}
        frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
        full = model.state_dict

        def trimmed(*args, _full=full, _frozen=frozen, **kwargs):
            return type(_full())((k, v) for k, v in _full(*args, **kwargs).items() if k not in _frozen)

        model.state_dict = trimmed
        groups = [list(group["params"]) for group in optim.param_groups] if optim is not None else []
        for group in (optim.param_groups if optim is not None else []):
            group["params"] = [p for p in group["params"] if id(p) not in frozen_ids]
        restore.append((model, optim, groups))
    try:
        t.save_model(0, str(directory))
    finally:
        for model, optim, groups in restore:
            del model.state_dict
            for group, params in zip(optim.param_groups if optim is not None else [], groups):
                group["params"] = params


def batch_labels(name: str, step: int, size: int, n_classes: int) -> list[int]:
    """Every class at least once per batch (when the batch is large enough), in a case-dependent order."""
    rng = random.Random(zlib.crc32(f"{name}/{step}".encode()))
    labels = list(range(n_classes)) * (size // n_classes + 1)
    rng.shuffle(labels)
    return labels[:size]


def upsample(small: torch.Tensor) -> torch.Tensor:
    factor = case_table.IMAGE_SIZE // case_table.LOW_RES
    return small.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1).contiguous()


@contextlib.contextmanager
def recording_episodes(trainer_module, t, record: dict):
    """Record (without changing anything) the prompts after the trainer's first update of a batch and the
    meta-test gradients its autograd.grad calls return."""
    grads: list[torch.Tensor] = []
    original_update, original_autograd = t.model_backward_and_update, trainer_module.autograd

    def update(loss, names=None):
        original_update(loss, names)
        if "in_domain" not in record:
            record["in_domain"] = {k: v.detach().float().clone() for k, v in
                                   (("text_prompts", t.model.prompt_learner.ctx),
                                    ("visual_prompts", t.model.vision_prompt_learner.ctx))}

    class Autograd:
        @staticmethod
        def grad(*args, **kwargs):
            out = original_autograd.grad(*args, **kwargs)
            grads.append(out[0].detach().float().clone())
            return out

    t.model_backward_and_update, trainer_module.autograd = update, Autograd
    try:
        yield
    finally:
        t.model_backward_and_update, trainer_module.autograd = original_update, original_autograd
        record["grads"] = grads


def run_case(name: str, spec: dict, train_module, repo: Path, images: torch.Tensor, out: Path,
             checkpoints: Path | None = None) -> None:
    from dassl.engine import TRAINER_REGISTRY

    options = dict(spec.get("reference_options", {}))
    cfg = env.config(train_module, repo / spec["yaml"], DATASET__NAME=spec["reference_dataset"],
                     SEED=spec.get("seed", 1), **options)
    torch.manual_seed(spec.get("seed", 1))
    with env.maple_widths(spec):
        t = env.trainer(TRAINER_REGISTRY.get(spec["trainer"]), cfg, spec["classes"])
    if spec["trainer"] == "MaPLe":
        t.model.prompt_learner.float()  # its first coupling is built .half(), which fp32 inputs cannot use
    rules = rules_for(spec) if spec["trainer"] != "ZeroshotCLIP" else []
    params = trainable(t.model, rules) if rules else {}
    tensors = {f"init.{k}": v for k, v in stacked(params).items()}
    def rounding():
        if spec["repo"] not in (case_table.MMPL, case_table.PROMPTSRC) or HALF_ROUNDING == "released":
            return contextlib.nullcontext()
        return env.no_half_rounding() if HALF_ROUNDING == "none" else env.half_rounding_in_fp32()

    t.set_model_mode("eval") if params else None
    with torch.no_grad(), rounding():
        tensors["eval.logits"] = t.model_inference(upsample(images[spec.get("eval", case_table.EVAL)])).float()

    meta = {"labels": [], "domains": spec.get("domains")}
    if spec["steps"]:
        t.set_model_mode("train")
        env.set_lr(t, spec["lr"])
        if spec.get("epoch_per_step"):  # every batch ends an epoch; the LR stays at lr
            t.num_batches, t.batch_idx, t.update_lr = 1, 0, lambda *args: None
        random.seed(spec.get("seed", 1))  # what Dassl's set_random_seed leaves for the released class split
        grad_mode = env.torch1_zero_grad() if spec.get("zero_grad") == "torch1" else contextlib.nullcontext()
        record: dict = {}
        recorder = (recording_episodes(sys.modules[type(t).__module__], t, record) if spec.get("record_episodes")
                    else contextlib.nullcontext())
        with rounding(), grad_mode, recorder:
            for k, indices in enumerate(spec["step_images"]):
                labels = batch_labels(name, k, len(indices), len(spec["classes"]))
                meta["labels"].append(labels)
                batch = {"img": upsample(images[indices]), "label": torch.tensor(labels)}
                if spec.get("domains"):
                    batch["domain"] = torch.tensor(spec["domains"][k])
                t.forward_backward(batch)
        tensors |= {f"trained.{k}": v for k, v in stacked(params).items()}
        for key, value in record.get("in_domain", {}).items():
            tensors[f"in_domain.{key}"] = value
        for i, grad in enumerate(record.get("grads", [])):
            tensors[f"episode{i}.grad"] = grad
        moved = {k: float((tensors[f"trained.{k}"] - tensors[f"init.{k}"]).abs().max() /
                          tensors[f"init.{k}"].abs().max().clamp(min=1e-12)) for k in stacked(params)}
        meta["relative_change"] = moved
        print(f"  {name}: trained tensors moved by (max |change| / max |init|) {moved}", flush=True)
        if checkpoints is not None:
            save_released_checkpoint(t, checkpoints / name)
            t.set_model_mode("eval")
            with torch.no_grad(), rounding():
                logits = t.model_inference(upsample(images[spec.get("eval", case_table.EVAL)])).float()
            save_file({"logits": logits.contiguous()}, str(checkpoints / name / "released_logits.safetensors"),
                      metadata={"case": json.dumps(spec)})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"{name}.safetensors"),
              metadata={"case": json.dumps(spec), "golden": json.dumps(meta)})


RELEASED_KEYS = ("OPTIM.NAME", "OPTIM.LR", "OPTIM.MAX_EPOCH", "OPTIM.WARMUP_EPOCH", "OPTIM.WARMUP_TYPE",
                 "OPTIM.WARMUP_CONS_LR", "OPTIM.LR_SCHEDULER", "OPTIM.MOMENTUM", "OPTIM.WEIGHT_DECAY",
                 "DATALOADER.TRAIN_X.BATCH_SIZE", "DATALOADER.TEST.BATCH_SIZE", "INPUT.SIZE", "INPUT.INTERPOLATION",
                 "INPUT.TRANSFORMS", "INPUT.RRCROP_SCALE", "MODEL.BACKBONE.NAME")
PROMPT_TRAINERS = ("COOP", "COCOOP", "VPT", "IVLP", "MAPLE", "META", "PROMPTSRC")
"""The TRAINER config nodes of the prompt learners (Dassl's own trainers' nodes are left out)."""


def released_configs(train_module, repo: Path, wanted: dict[str, str]) -> dict[str, dict]:
    """For each preset key, the values of the released config file it follows (Dassl's defaults, the
    repository's extend_cfg, then the file), and the LR of every epoch that Dassl's scheduler gives them."""
    import schedule_worker

    out = {}
    for key, path in wanted.items():
        cfg = env.config(train_module, repo / path)
        values = {k: _get(cfg, k) for k in RELEASED_KEYS}
        values |= {f"TRAINER.{name}.{k}": v for name, node in cfg.TRAINER.items() if name in PROMPT_TRAINERS
                   for k, v in node.items()}
        settings = {"lr": cfg.OPTIM.LR, "epochs": cfg.OPTIM.MAX_EPOCH, "warmup_epochs": cfg.OPTIM.WARMUP_EPOCH,
                    "warmup_lr": cfg.OPTIM.WARMUP_CONS_LR}
        out[key] = {"follows": path, "values": values, "lr_per_epoch": schedule_worker.dassl_lrs(settings)}
    return out


ABSENT_KEYS = {"INPUT.RRCROP_SCALE": [0.08, 1.0]}
"""What a key means where the repository's Dassl has no such key: KgCoOp's Dassl (Dassl.ProGrad.pytorch) builds
``RandomResizedCrop(size, interpolation)`` with no scale, i.e. torchvision's default (0.08, 1.0)."""


def _get(cfg, dotted: str):
    value = cfg
    for part in dotted.split("."):
        if part not in value and dotted in ABSENT_KEYS:
            return ABSENT_KEYS[dotted]
        value = value[part]
    return list(value) if isinstance(value, tuple) else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--dassl", type=Path, required=True)
    parser.add_argument("--fixture", type=Path, required=True, help="the fixture CLIP (OpenAI-format .pt)")
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--released-configs", type=Path, nargs=2, metavar=("WANTED", "OUT"),
                        help="a JSON {preset key: config file path in this repository} in, their values out")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="also write each trained case's Dassl checkpoint (the trainer's save_model) and the "
                             "trained model's eval logits under CHECKPOINTS/<case>/")
    parser.add_argument("cases", nargs="*")
    args = parser.parse_args()
    train_module = env.enter_repository(args.repo, args.dassl)
    env.use_fixture_weights(args.fixture)
    if any(case_table.CASES[n]["trainer"] == "ZeroshotCLIP" for n in args.cases):
        env.fp32_clip("trainers.zsclip")
    if any(case_table.CASES[n]["trainer"] == "KgCoOp" for n in args.cases):
        env.fp32_clip("trainers.kgcoop")
    if any(case_table.CASES[n]["trainer"] == "PromptSRC" for n in args.cases):
        env.fp32_clip("trainers.promptsrc")
    images = load_file(str(args.inputs))["images"]
    for name in args.cases:
        run_case(name, case_table.CASES[name], train_module, args.repo, images, args.out, args.checkpoints)
    if args.released_configs:
        wanted, out = args.released_configs
        out.write_text(json.dumps(released_configs(train_module, args.repo, json.loads(wanted.read_text())), indent=1))


if __name__ == "__main__":
    main()
