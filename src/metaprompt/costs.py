"""What a run costs, recorded beside its results: trainable parameters, the FLOPs of a training step
(counted with torch's formulas, as benchmarks/bench_speed.py counts them), wall times, throughput, peak
memory, and the share of test features the sweep's feature store served."""
from __future__ import annotations

import resource
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count, shape_wrapper

MIB = 2 ** 20


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def _fused_attention_block_flops(query, *args, out_shape=None, **kwargs) -> int:
    """nn.MultiheadAttention's inference fast path ([N, L, E] in): QKV and output projections, QK^T and AV."""
    n, length, width = query
    return 8 * n * length * width * width + 4 * n * length * length * width


FLOP_FORMULAS = {
    **flop_registry,
    # ops torch's flop counter does not know: CPU attention, and the fused block that frozen passes take
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: shape_wrapper(_cpu_attention_flops),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: shape_wrapper(_cpu_attention_backward_flops),
    torch.ops.aten._native_multi_head_attention: shape_wrapper(_fused_attention_block_flops),
}


class FlopCount(TorchDispatchMode):
    """FLOPs of the ops run inside the mode, by torch's formulas (``torch.utils.flop_counter``) and the ones
    above; the ops themselves run unchanged. Unlike ``FlopCounterMode`` it tracks no modules: its hooks keep
    activations alive (the memory of a checkpointed pass looks 3x larger) and fail on a parameter passed as a
    module input under no_grad."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = FLOP_FORMULAS.get(func.overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """The run's peak memory: on CUDA the tensors allocated on its GPU since :func:`reset_peak_memory`; on
    the CPU the process's peak resident set (since it started: runs earlier in the process count too)."""
    if device.type == "cuda":
        return {"peak_memory_mib": torch.cuda.max_memory_allocated(device) / MIB, "peak_memory_of": "cuda allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return {"peak_memory_mib": rss / (MIB if sys.platform == "darwin" else 1024), "peak_memory_of": "process RSS"}


def trainable_parameters(method) -> int:
    return sum(p.numel() for p in method.trainable_parameters())


def with_evaluation(cost: dict | None, seconds: float, images: int, from_store: int) -> dict:
    """A run's cost with one more evaluation counted (``images`` in ``seconds``, ``from_store`` of them from the
    feature store), and the rates derived from the totals: images/s and the store's share."""
    cost = dict(cost or {})
    cost["eval_seconds"] = cost.get("eval_seconds", 0.0) + seconds
    cost["eval_images"] = cost.get("eval_images", 0) + images
    cost["test_features_from_store"] = cost.get("test_features_from_store", 0) + from_store
    total, elapsed = cost["eval_images"], cost["eval_seconds"]
    return {**cost, "eval_images_per_second": total / elapsed if elapsed else 0.0,
            "store_share": cost["test_features_from_store"] / total if total else 0.0}
