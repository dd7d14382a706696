"""metaprompt: prompt learning for CLIP-like models (MetaPrompt and the field's baselines).

``metaprompt.load_clip`` and ``metaprompt.PromptCLIP`` are loaded on first use, so that importing the
package (or a torch-free part of it, such as the results tables) does not import torch.
"""
__version__ = "0.1.0"

__all__ = ["PromptCLIP", "load_clip", "__version__"]


def __getattr__(name: str):
    if name in ("PromptCLIP", "load_clip"):
        from . import clip

        return getattr(clip, name)
    raise AttributeError(f"module 'metaprompt' has no attribute {name!r}")
