"""The numeric precisions a run can use (the names ``--set precision=`` takes); no torch here, so that configs
are checked without it. :mod:`metaprompt.clip` runs them."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp16-pure")
"""``auto`` (the default): bf16 on a GPU, fp32 elsewhere. ``fp32``: exact (no TF32). ``bf16`` / ``fp16``: mixed
(weights and prompts stay fp32, matrix products run in the lower precision under autocast; fp16 evaluates
only, see ``Trainer``). ``fp16-pure``: weights, prompts and features in fp16 without autocast, as the released
codebases' default ``PREC: fp16`` (CUDA only)."""
AUTO = "auto"
PURE_FP16 = "fp16-pure"


def resolve_precision(precision: str, device_type: str) -> str:
    """The precision ``precision`` stands for on a device of ``device_type`` (``cuda``, ``cpu``...)."""
    if precision == AUTO:
        return "bf16" if device_type == "cuda" else "fp32"
    if precision == PURE_FP16 and device_type != "cuda":
        return "fp32"
    return precision
