"""The numeric precisions a run can use (the names ``--set precision=`` takes); no torch here, so that configs
are checked without it. :mod:`metaprompt.clip` runs them."""

PRECISIONS = ("fp32", "bf16", "fp16", "fp16-pure")
"""``fp32``; ``bf16`` / ``fp16``: mixed (weights and prompts stay fp32, matrix products run in the lower
precision under autocast); ``fp16-pure``: weights, prompts and features in fp16 without autocast, as the
released codebases' default ``PREC: fp16`` (CUDA only)."""
PURE_FP16 = "fp16-pure"
