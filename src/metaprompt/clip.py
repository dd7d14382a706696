"""Load any open_clip CLIP, and encode text and images with deep prompts on top of open_clip's own modules.

What a model IS comes from open_clip (architecture, weights, tokenizer, preprocessing); this module only
adds the prompt-aware forward passes, by looping over open_clip's residual blocks:

- text: learned vectors sit at token positions ``1 .. n_ctx`` of the input and are replaced before each
  block ``1 <= i < depth`` (deep text prompts); the EOT feature goes through ``ln_final`` and the projection;
- image: ``n_vis`` prompt tokens are appended AFTER the positional embedding (they get none), before
  ``ln_pre``, and replaced before each block ``1 <= i < depth`` (deep visual prompts).

With no prompts both passes equal open_clip's ``encode_text`` / ``encode_image``.
Exact context truncation: CLIP's text transformer is causal, so the EOT feature depends only on tokens up
to the EOT; the text pass runs over the first ``max(EOT index) + 1`` tokens only.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import weights
from .world import WORLD_MODEL
from .errors import MetapromptError
from .precision import AUTO, PRECISIONS, PURE_FP16, resolve_precision

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""Autocast dtype of the mixed precisions; the others run without autocast (see :mod:`metaprompt.precision`)."""


@dataclass(frozen=True)
class ModelSource:
    """Where a CLIP came from, as stored in artifacts: enough to load it again."""

    name: str
    pretrained: str | None


class PromptCLIP(nn.Module):
    """A frozen open_clip CLIP with prompt-aware text and image encoders.

    Attributes: ``d_text`` (text transformer width), ``d_vis`` (vision transformer width), ``embed_dim``,
    ``image_size``, ``mean``, ``std``, ``source`` (a :class:`ModelSource`), ``precision``.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], torch.Tensor], *,
                 image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 source: ModelSource, precision: str = "fp32"):
        super().__init__()
        if precision not in PRECISIONS or precision == AUTO:
            raise MetapromptError(f"unknown precision {precision!r}; expected one of "
                                  f"{', '.join(p for p in PRECISIONS if p != AUTO)} (load_clip resolves 'auto')")
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        if precision == PURE_FP16:
            self.model.half()
        self.feature_dtype = torch.float16 if precision == PURE_FP16 else torch.float32
        """The dtype of features and logits: fp16 in pure fp16, else fp32."""
        self.tokenizer = tokenizer
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.source = source
        self.precision = precision
        self.feature_store = None
        """A :class:`~metaprompt.feature_store.FeatureStore` serving the hand-crafted classifiers, or None."""
        self.open_clip_name: str | None = None
        """The open_clip architecture it was built as (None for the world's model)."""
        self.quick_gelu = False
        """Built with QuickGELU (OpenAI's weights): plain open_clip needs ``force_quick_gelu`` to match."""
        self.truncate_context = True
        self.text_checkpointing = False
        self.text_prompt_support = _text_prompt_problem(model)
        self.visual_prompt_support = _visual_prompt_problem(model)
        self.embed_dim = int(model.text_projection.shape[1]) if _has_native_text(model) else None
        self.d_text = int(model.transformer.width) if _has_native_text(model) else None
        self.d_vis = int(model.visual.transformer.width) if isinstance(model.visual, VisionTransformer) else None

    def train(self, mode: bool = True) -> "PromptCLIP":
        """CLIP stays in eval mode: it is frozen (no dropout, no patch dropout)."""
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for this model's precision (fp32: a no-op)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ----------------------------------------------------------------- text
    def require_text_prompts(self, method: str) -> None:
        if self.text_prompt_support:
            raise MetapromptError(f"{method} needs text prompts, but model {self.source.name!r} "
                                  f"{self.text_prompt_support}")

    def require_visual_prompts(self, method: str) -> None:
        if self.visual_prompt_support:
            raise MetapromptError(f"{method} needs visual prompts, but model {self.source.name!r} "
                                  f"{self.visual_prompt_support}")

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """Input token embeddings [N, L, d_text] (before the positional embedding)."""
        return self.model.token_embedding(tokens)

    @staticmethod
    def eot_index(tokens: torch.Tensor) -> torch.Tensor:
        """Position of the end-of-text token: the largest id in each sequence (CLIP's argmax pooling)."""
        return tokens.argmax(dim=-1)

    def encode_text(self, tokens: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Text features (unnormalised) of token sequences, with optional deep prompts.

        ``prompts``: ``[depth, n_ctx, d_text]`` shared by all sequences or ``[N, depth, n_ctx, d_text]``;
        layer 0 goes at token positions ``1..n_ctx`` of the input, layer ``i`` replaces them before block ``i``.
        """
        if prompts is not None:
            self.require_text_prompts("text prompting")
        if self.text_prompt_support:  # a text tower prompts cannot enter (SigLIP's, Hugging Face ones): its own pass
            return self.model.encode_text(tokens)
        x = self.token_embeddings(tokens)
        if prompts is not None:
            x = replace_tokens(x, _layer(prompts, 0), start=1)
        return self.encode_text_embeddings(x, self.eot_index(tokens), prompts)

    def encode_text_embeddings(self, x: torch.Tensor, eot: torch.Tensor, prompts: torch.Tensor | None = None,
                               length: int | None = None) -> torch.Tensor:
        """Run the text transformer on input embeddings ``x`` [N, L, d] (prompt layer 0 already in place).

        ``eot`` [N] gives each sequence's EOT position; ``prompts`` as in :meth:`encode_text` supplies the
        deep layers ``1..depth-1``. With ``truncate_context`` the sequences are cut after ``length`` tokens (at
        least the largest EOT + 1; read from ``eot`` when not given, which waits for the device).
        """
        m = self.model
        cast = m.transformer.get_cast_dtype()
        if not self.truncate_context:
            length = x.shape[1]
        elif length is None:
            length = int(eot.max()) + 1
        x = x[:, :length].to(cast) + m.positional_embedding[:length].to(cast)
        mask = m.attn_mask[:length, :length] if m.attn_mask is not None else None
        depth = _depth(prompts)
        for i, block in enumerate(m.transformer.resblocks):
            if 0 < i < depth:
                x = replace_tokens(x, _layer(prompts, i).to(x.dtype), start=1)
            x = self._run_block(block, x, mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return _project(x, m.text_projection)

    def _run_block(self, block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.text_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, attn_mask=mask, use_reentrant=False)
        return block(x, attn_mask=mask)

    # ---------------------------------------------------------------- image
    def encode_image(self, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Image features (unnormalised), with optional deep visual prompts ``[depth, n_vis, d_vis]``."""
        if prompts is not None:
            self.require_visual_prompts("visual prompting")
        if self.visual_prompt_support:
            return self.model.encode_image(images)
        v = self.model.visual
        x = v.conv1(images.to(v.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        depth = _depth(prompts)
        if depth:
            x = torch.cat([x, prompts[0].to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
        x = v.ln_pre(x)
        for i, block in enumerate(v.transformer.resblocks):
            if 0 < i < depth:
                x = replace_tokens(x, prompts[i].to(x.dtype), start=x.shape[1] - prompts.shape[-2])
            x = block(x)
        return _project(v.ln_post(x[:, 0]), v.proj)

    def image_features(self, images: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised image features under this model's precision."""
        with self.autocast():
            return F.normalize(self.encode_image(images, prompts).to(self.feature_dtype), dim=-1)

    def text_features(self, tokens: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised text features under this model's precision."""
        with self.autocast():
            return F.normalize(self.encode_text(tokens, prompts).to(self.feature_dtype), dim=-1)

    @torch.no_grad()
    def zero_shot_classifier(self, classnames: list[str], templates: tuple[str, ...],
                             chunk: int = 1000) -> torch.Tensor:
        """Frozen hand-crafted text classifier [C, D]: per class, encode each template, normalise, average
        over templates, re-normalise. From the sweep's feature store when one is attached (``feature_store``)."""
        compute = lambda: self._zero_shot_classifier(classnames, templates, chunk)  # noqa: E731
        return compute() if self.feature_store is None else \
            self.feature_store.classifier(self, classnames, templates, compute)

    @torch.no_grad()
    def mean_template_features(self, classnames: list[str], templates: tuple[str, ...],
                               chunk: int = 1000) -> torch.Tensor:
        """[C, D]: per class, the mean over templates of the raw (unnormalised) text features, then normalised
        (PromptSRC's frozen text features; :meth:`zero_shot_classifier` normalises before averaging)."""
        total = None
        for template in templates:
            raw = self._template_features(classnames, template, chunk, normalized=False)
            total = raw if total is None else total + raw
        return F.normalize(total / len(templates), dim=-1)

    def _zero_shot_classifier(self, classnames: list[str], templates: tuple[str, ...], chunk: int) -> torch.Tensor:
        per_template = [self._template_features(classnames, template, chunk) for template in templates]
        return F.normalize(torch.stack(per_template).mean(0), dim=-1)

    def _template_features(self, classnames: list[str], template: str, chunk: int,
                           normalized: bool = True) -> torch.Tensor:
        """[C, D] text features of ``template`` filled with each class name, ``chunk`` sequences per pass."""
        texts = [template.format(c) for c in classnames]
        with self.autocast():
            feats = [self.encode_text(self.tokenize(texts[i:i + chunk])).to(self.feature_dtype)
                     for i in range(0, len(texts), chunk)]
        features = torch.cat(feats)
        return F.normalize(features, dim=-1) if normalized else features


def replace_tokens(x: torch.Tensor, prompt: torch.Tensor, start: int) -> torch.Tensor:
    """``x`` with positions ``start .. start+n`` replaced by ``prompt`` ([n, d] or [N, n, d])."""
    n = prompt.shape[-2]
    prompt = prompt.expand(x.shape[0], -1, -1) if prompt.dim() == 2 else prompt
    return torch.cat([x[:, :start], prompt.to(x.dtype), x[:, start + n:]], dim=1)


def _layer(prompts: torch.Tensor, i: int) -> torch.Tensor:
    """Layer ``i`` of [depth, n, d] or per-sequence [N, depth, n, d] prompts."""
    return prompts[i] if prompts.dim() == 3 else prompts[:, i]


def _depth(prompts: torch.Tensor | None) -> int:
    if prompts is None:
        return 0
    return prompts.shape[0] if prompts.dim() == 3 else prompts.shape[1]


def _project(x: torch.Tensor, projection: nn.Module | torch.Tensor | None) -> torch.Tensor:
    if projection is None:
        return x
    if isinstance(projection, nn.Linear):
        return projection(x)
    return x @ projection


def _has_native_text(model: nn.Module) -> bool:
    return isinstance(model, open_clip.model.CLIP)


def _text_prompt_problem(model: nn.Module) -> str:
    """Why deep text prompts cannot run on ``model`` ('' when they can)."""
    if not _has_native_text(model):
        return "has a non-native text tower (Hugging Face or custom text); deep text prompts need open_clip's own text transformer"
    if model.text_pool_type != "argmax":
        return f"pools text with {model.text_pool_type!r}; deep text prompts need CLIP's EOT (argmax) pooling"
    if not getattr(model.transformer, "batch_first", True):
        return "has a sequence-first text transformer; expected open_clip's batch-first transformer"
    return ""


def _visual_prompt_problem(model: nn.Module) -> str:
    """Why deep visual prompts cannot run on ``model`` ('' when they can)."""
    v = model.visual
    if not isinstance(v, VisionTransformer):
        return (f"has a {type(v).__name__} image tower; visual prompts need open_clip's native "
                "VisionTransformer (ResNet and timm towers are not supported)")
    if v.attn_pool is not None or v.pool_type != "tok":
        return "pools image tokens without the CLS token; visual prompts need CLS-token pooling"
    if not getattr(v.transformer, "batch_first", True):
        return "has a sequence-first vision transformer; expected open_clip's batch-first transformer"
    return ""


# ---------------------------------------------------------------------------------------- loading
def load_clip(name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
              precision: str = AUTO) -> PromptCLIP:
    """Load a CLIP with prompt-aware encoders.

    ``name`` is an open_clip model name (``ViT-B-16``), an ``hf-hub:`` id, a path to an open_clip model
    config JSON (for custom architectures), or ``world-tiny`` (the project's offline model).
    ``pretrained`` is an open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``...), a local
    checkpoint file, or None for random weights (or the hf-hub / world model's own weights). ``precision``
    (see :mod:`metaprompt.precision`): ``auto`` is bf16 on a GPU, fp32 elsewhere.
    """
    source = ModelSource(name, pretrained)
    if precision not in PRECISIONS:
        raise MetapromptError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    device_type = torch.device(device).type
    if precision == PURE_FP16 and device_type != "cuda":
        _warn(f"precision {PURE_FP16} runs on CUDA only; on {device_type} this run uses fp32, "
              "with everything else the same")
    precision = resolve_precision(precision, device_type)
    if precision == "fp32":
        exact_fp32()
    if name == WORLD_MODEL:
        clip = _load_world(pretrained, source, precision)
    else:
        clip = _load_open_clip(name, pretrained, source, precision)
    return clip.to(device)


def exact_fp32() -> None:
    """fp32 means fp32 on a GPU too: no TF32 in cuBLAS matrix products or in cuDNN convolutions (the patch
    embedding), forward and backward. Process-wide, as torch's own switches are; torch's default leaves TF32 on
    for cuDNN."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def _load_world(pretrained: str | None, source: ModelSource, precision: str) -> PromptCLIP:
    from .world.model import load_world_clip

    world = load_world_clip(pretrained)
    return PromptCLIP(world.model, world.tokenizer, image_size=world.image_size, mean=world.mean,
                      std=world.std, source=source, precision=precision)


@functools.lru_cache(maxsize=8)
def _tokenizer(arch: str):
    """open_clip's tokenizer of ``arch``, built once per process (reading its BPE vocabulary takes a tenth of a
    second, once per run of a sweep otherwise); it holds no state a run changes."""
    return open_clip.get_tokenizer(arch)


def _load_open_clip(name: str, pretrained: str | None, source: ModelSource, precision: str) -> PromptCLIP:
    arch = _register_config_file(name)
    is_file = bool(pretrained) and Path(pretrained).exists()
    if pretrained and not is_file and pretrained not in _known_tags(arch):
        if pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise MetapromptError(f"checkpoint file {pretrained} does not exist")
        raise MetapromptError(
            f"unknown pretrained tag {pretrained!r} for model {arch!r}; expected a local checkpoint file or one "
            f"of: {', '.join(_known_tags(arch)) or '(none listed by open_clip)'}")
    if not arch.startswith(("hf-hub:", "local-dir:")) and arch not in open_clip.list_models():
        raise MetapromptError(f"unknown model {name!r}: open_clip has no such architecture "
                              "(see open_clip.list_models(), or pass an open_clip model config JSON file)")
    checkpoint = weights.read_checkpoint(pretrained) if is_file else None
    openai = pretrained == weights.OPENAI_TAG or bool(checkpoint and checkpoint.openai)
    quick_gelu = weights.quick_gelu_for(arch, None if is_file else pretrained, openai, warn=_warn)
    if is_file and not openai and not quick_gelu and f"{arch}-quickgelu" in open_clip.list_models():
        _warn(f"{pretrained} does not say whose weights it holds (a plain state dict has none of OpenAI's own "
              f"entries), so model {arch!r} is built with the GELU its config names; OpenAI's weights were trained "
              f"with QuickGELU (encode_image then differs by about 3e-2): for them, pass --model {arch}-quickgelu")
    try:
        if checkpoint is not None and checkpoint.openai:
            model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
            weights.load_openai_state_dict(model, checkpoint, arch)
        else:
            model = open_clip.create_model(arch, pretrained=pretrained or None, load_weights=True,
                                           force_quick_gelu=quick_gelu)
        tokenizer = _tokenizer(arch)
    except MetapromptError:
        raise
    except Exception as err:  # noqa: BLE001 - open_clip, hf-hub and torch.load raise many kinds
        raise _weights_error(name, pretrained, err) from None
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    clip = PromptCLIP(model, tokenizer, image_size=int(size), mean=cfg["mean"], std=cfg["std"],
                      source=source, precision=precision)
    clip.open_clip_name, clip.quick_gelu = arch, bool(quick_gelu)
    return clip


def _register_config_file(name: str) -> str:
    """A path to an open_clip config JSON registers it and returns its architecture name (the file stem)."""
    path = Path(name)
    if name.endswith(".json"):
        if not path.is_file():
            raise MetapromptError(f"model config file {name} does not exist")
        open_clip.add_model_config(path)
        return path.stem
    return name


def _warn(message: str) -> None:
    sys.stderr.write(f"metaprompt: warning: {message}\n")


def _known_tags(arch: str) -> list[str]:
    return [tag for model, tag in open_clip.list_pretrained() if model == arch]


def _weights_error(name: str, pretrained: str | None, err: Exception) -> MetapromptError:
    if pretrained is None:  # nothing to download: the architecture itself did not build
        return MetapromptError(f"could not build model {name!r} with open_clip: {str(err).splitlines()[0]}")
    return MetapromptError(
        f"could not load weights for model {name!r} (pretrained={pretrained!r}): {str(err).splitlines()[0]}. "
        "If this machine cannot reach the internet, download the checkpoint elsewhere and pass it with "
        "--pretrained /path/to/checkpoint (an open_clip or OpenAI .pt/.bin/.safetensors file)")


@contextlib.contextmanager
def exact_context(clip: PromptCLIP, truncate: bool) -> Iterator[None]:
    """Temporarily switch context truncation (for comparisons against the full-length pass)."""
    before = clip.truncate_context
    clip.truncate_context = truncate
    try:
        yield
    finally:
        clip.truncate_context = before
