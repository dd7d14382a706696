"""Which device and process-group backend a run gets, on machines with and without GPUs, under torchrun or not.
The GPUs are simulated (``torch.cuda.is_available`` / ``device_count``): these are the rules, not the kernels."""
from __future__ import annotations

import pytest
import torch

from metaprompt import distributed as dist
from metaprompt.errors import MetapromptError


@pytest.fixture()
def gpus(monkeypatch):
    """A machine with ``n`` GPUs (and torchrun's variables, when given)."""
    def machine(n: int, **env: str) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
    return machine


def torchrun(local_rank: int, per_node: int | None, world: int = 2) -> dict[str, str]:
    env = {"RANK": str(local_rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(local_rank)}
    return env | ({"LOCAL_WORLD_SIZE": str(per_node)} if per_node is not None else {})


def test_the_backend_follows_the_run_device():
    assert dist.backend_for("cpu") == "gloo" and dist.backend_for("cuda:1") == "nccl"


def test_one_process_takes_the_gpu_when_there_is_one(gpus):
    gpus(0)
    assert dist.select_device(None) == "cpu"
    gpus(2)
    assert dist.select_device(None) == "cuda:0" and dist.select_device("cuda") == "cuda"
    assert dist.select_device("cuda:1") == "cuda:1" and dist.select_device("cpu") == "cpu"


def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(gpus):
    gpus(2, **torchrun(local_rank=1, per_node=2))
    assert dist.select_device(None) == "cuda:1" and dist.select_device("cuda") == "cuda:1"
    assert dist.select_device("cpu") == "cpu" and dist.backend_for(dist.select_device("cpu")) == "gloo"


def test_under_torchrun_one_named_gpu_for_every_process_is_refused(gpus):
    gpus(2, **torchrun(local_rank=0, per_node=2))
    with pytest.raises(MetapromptError, match="--device cuda:0 under torchrun puts all 2 processes of this node "
                                              "on one GPU; pass --device cuda"):
        dist.select_device("cuda:0")


def test_more_processes_on_a_node_than_gpus_is_refused_with_what_to_do(gpus):
    gpus(1, **torchrun(local_rank=1, per_node=2))
    with pytest.raises(MetapromptError, match=r"torchrun started 2 processes on this node, but it has 1 visible CUDA "
                                              r"device\(s\) \(LOCAL_RANK 1\); start at most 1 per node "
                                              r"\(--nproc_per_node 1\), or train on the CPU with --device cpu"):
        dist.select_device(None)
    assert dist.select_device("cpu") == "cpu"  # gloo on the CPU needs no GPU


def test_a_process_that_sees_one_gpu_of_its_own_takes_it(gpus):
    """A launcher that sets CUDA_VISIBLE_DEVICES per process (SLURM): no LOCAL_WORLD_SIZE, one GPU each."""
    gpus(1, **torchrun(local_rank=3, per_node=None, world=8))
    assert dist.select_device(None) == "cuda:0"


def test_a_gpu_index_the_machine_lacks_is_refused(gpus):
    gpus(2)
    with pytest.raises(MetapromptError, match=r"--device cuda:5: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        dist.select_device("cuda:5")


# ------------------------------------------------------------------ what a method holds follows it

SMALL = {"zeroshot": {}, "coop": {}, "cocoop": {}, "kgcoop": {}, "vpt": {"depth": 2, "n_vis": 2},
         "ivlp": {"text_depth": 2, "vision_depth": 2}, "maple": {"depth": 2},
         "metaprompt": {"text_depth": 2, "vision_depth": 2}, "promptsrc": {"text_depth": 2, "vision_depth": 2}}


def build(name: str, clip):
    from metaprompt.methods import build_method, make_config

    return build_method(name, clip, ["ant", "bee", "cat"], make_config(name, SMALL[name]))


def plain_tensors(module: torch.nn.Module) -> list[str]:
    """Tensors held as plain attributes of the module or its submodules: neither parameters nor buffers, so
    ``.to(device)`` leaves them behind."""
    found = []
    for prefix, sub in module.named_modules():
        for key, value in vars(sub).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, torch.Tensor) for v in values):
                found.append(f"{prefix or type(module).__name__}.{key}")
    return found


@pytest.mark.parametrize("name", SMALL)
def test_every_tensor_a_method_holds_is_a_parameter_or_a_buffer(name, tiny_clip):
    method = build(name, tiny_clip)
    assert plain_tensors(method) == []
    method.set_classes(["dog", "emu"])  # rebuilt class tensors are buffers too
    assert plain_tensors(method) == []


@pytest.mark.parametrize("name", SMALL)
def test_a_method_moved_after_it_is_built_computes_on_its_new_device(name, tiny_clip):
    """Built on the CPU, moved with .to() (as load_method(...).to("cuda") does): the meta device stands in for
    a GPU here, and any tensor left behind on the CPU fails the forward pass."""
    method = build(name, tiny_clip).to("meta")
    with method.evaluation():
        logits = method.model_inference(torch.zeros(2, 3, 32, 32, device="meta"))
    assert logits.device.type == "meta" and tuple(logits.shape) == (2, 3)


@pytest.mark.gpu
@pytest.mark.parametrize("name", SMALL)
def test_a_method_built_on_the_cpu_runs_on_the_gpu(name, tiny_clip):
    cpu = build(name, tiny_clip)
    images = torch.randn(2, 3, 32, 32)
    with cpu.evaluation():
        expected = cpu.model_inference(images)
    gpu = cpu.to("cuda")
    with gpu.evaluation():
        logits = gpu.model_inference(images.cuda()).cpu()
    assert torch.allclose(logits, expected, atol=1e-2)


# ------------------------------------------------------------------ more processes than a published batch holds

def test_a_batch_smaller_than_the_process_count_says_what_to_do(monkeypatch, tmp_path, model, capsys):
    """IVLP's published batch of 4 on 8 processes: refused before training, naming the batch and the fix."""
    from helpers import make_image_folder, train_args
    from metaprompt.cli import main

    monkeypatch.setattr(dist, "world_size", lambda: 8)
    folder = make_image_folder(tmp_path / "data", ["ant", "bee"], {"train": 8, "test": 1})
    out = tmp_path / "run"
    args = train_args("ivlp", folder, out, model, "text_depth=2", "vision_depth=2", extra=("--shots", "0"))
    assert main(args) == 2
    line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metaprompt: error:")][0]
    assert ("train.batch_size=4 cannot be split over 8 processes" in line
            and "--set batch_size=8 --set lr=0.007" in line and "Run at most 4 processes" in line)
    assert not out.exists()


# ------------------------------------------------------------------ random states, precision, determinism

def test_a_checkpoint_holds_the_random_state_of_the_run_device_only_and_resumes_on_a_smaller_machine():
    from metaprompt.checkpoint import rng_states, set_rng_states

    torch.manual_seed(3)
    states = rng_states({"split": (1, 2)}, torch.device("cpu"))
    assert "cuda" not in states
    expected = torch.rand(3)
    saved_on_eight_gpus = {**states, "cuda": [torch.zeros(16, dtype=torch.uint8)] * 8}
    assert set_rng_states(saved_on_eight_gpus, torch.device("cpu")) == {"split": (1, 2)}
    assert torch.equal(torch.rand(3), expected)


def test_auto_precision_is_bf16_on_a_gpu_and_fp32_elsewhere():
    from metaprompt.precision import resolve_precision

    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp16-pure", "cpu") == "fp32" and resolve_precision("fp32", "cuda") == "fp32"


def test_fp32_turns_tf32_off_for_matrix_products_and_convolutions(tiny_model_name):
    """torch leaves TF32 on for cuDNN by default, and the patch embedding is a convolution: fp32 switches it
    off (the switches are read by the CUDA kernels; here only their values can be checked)."""
    from metaprompt.clip import load_clip

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        load_clip(tiny_model_name, None, precision="bf16")
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        load_clip(tiny_model_name, None, precision="fp32")
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fp16_training_without_loss_scaling_is_refused_with_what_to_use(tmp_path, model, capsys):
    from helpers import make_image_folder, train_args
    from metaprompt.cli import main

    folder = make_image_folder(tmp_path / "data", ["ant", "bee"], {"train": 2, "test": 1})
    out = tmp_path / "run"
    assert main(train_args("coop", folder, out, model, "precision=fp16", extra=("--shots", "0"))) == 2
    line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("metaprompt: error:")][0]
    assert "train.precision=fp16 (mixed) would train without loss scaling" in line and "precision=bf16" in line
    assert not out.exists()


def test_deterministic_runs_train_what_the_default_trains_on_the_cpu(tmp_path, model):
    import subprocess

    from helpers import make_image_folder, metaprompt_command, one_thread_env, prompts, train_args

    folder = make_image_folder(tmp_path / "data", ["ant", "bee", "cat"], {"train": 4, "test": 1})
    runs = {}
    for flag in ((), ("--deterministic",)):
        out = tmp_path / f"run{len(flag)}"
        args = train_args("coop", folder, out, model, "epochs=2", "batch_size=4", extra=("--shots", "0", *flag))
        done = subprocess.run(metaprompt_command(args), capture_output=True, text=True, timeout=120,
                              env=one_thread_env())
        assert done.returncode == 0, done.stderr
        runs[flag] = prompts(out)
    default, deterministic = runs.values()
    assert all(torch.equal(default[name], deterministic[name]) for name in default)
