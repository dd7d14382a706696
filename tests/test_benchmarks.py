"""The benchmark scripts measure the device they run on (its synchronisation and memory, not the current one's)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_bench_speed_waits_for_and_measures_the_gpu_it_runs_on(monkeypatch):
    bench = load("bench_speed")
    calls = []
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, name=name: calls.append((name, device)))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: calls.append(("allocated", device)) or 10)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: calls.append(("peak", device)) or 50)
    device = torch.device("cuda", 1)
    bench.synchronizer(device)()
    with bench.CudaPeak(device) as peak:
        pass
    assert peak.peak == 40 and calls and all(d == device for _, d in calls), calls


def test_the_gpu_smoke_script_runs_its_cpu_steps_as_a_dry_run(tmp_path):
    """benchmarks/gpu_smoke.sh --dry-run: every step that a CPU can run passes (methods in fp32 and bf16, the
    fp16 policy, a resume after SIGTERM, torchrun with gloo), the GPU-only ones are skipped, one summary."""
    import os
    import subprocess

    done = subprocess.run(["bash", str(BENCHMARKS / "gpu_smoke.sh"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"})
    summary = (tmp_path / "gpu_smoke.md").read_text()
    assert done.returncode == 0, summary + done.stderr[-2000:]
    assert "7 passed, 0 failed, 4 skipped" in summary, summary
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary.splitlines()[4:]}
    assert rows == {"environment": "PASS", "world": "PASS", "methods-fp32": "PASS", "methods-bf16": "PASS",
                    "methods-fp16-pure": "SKIP", "fp16": "PASS", "published": "SKIP", "gpu-tests": "SKIP",
                    "resume": "PASS", "torchrun": "PASS", "bench-speed": "SKIP"}, summary
    assert "ended bit-identical" in summary and "every collective on cpu tensors under gloo: passed" in summary
