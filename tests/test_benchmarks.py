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
