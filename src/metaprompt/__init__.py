"""metaprompt: prompt learning for CLIP-like models (MetaPrompt and the field's baselines)."""
__version__ = "0.1.0"

from .clip import PromptCLIP, load_clip  # noqa: E402

__all__ = ["PromptCLIP", "load_clip", "__version__"]
