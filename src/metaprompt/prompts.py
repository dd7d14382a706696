"""Learnable prompt tensors and the tokenised class prompts they are inserted into."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .clip import PromptCLIP
from .errors import MetapromptError
from .templates import prompt_classnames

PROMPT_STD = 0.02
PLACEHOLDER = "X"
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
DEEP_CTX_INIT_MAX = 4
"""multimodal-prompt-learning (IVLP, MaPLe) initialises from ``ctx_init`` only when ``n_ctx <= 4``; with more
tokens it starts from random vectors and ``X`` placeholders instead."""


def coop_context_conflict(n_ctx: int, ctx_init: str) -> str:
    """Why ``n_ctx`` and ``ctx_init`` cannot both hold for CoOp / CoCoOp ('' when they agree): the released code
    takes the context length from ctx_init's words."""
    words = len(ctx_init.split(" ")) if ctx_init else n_ctx
    if words == n_ctx:
        return ""
    return (f"n_ctx {n_ctx} and ctx_init {ctx_init!r} ({words} words) disagree: the context length is the number of "
            f"ctx_init's words (as released); give ctx_init {n_ctx} words, or ctx_init none for {n_ctx} random vectors")


def reconcile_coop_context(values: dict, given: set[str]) -> tuple[dict, str]:
    """What one of n_ctx / ctx_init given alone changes in the other (CoOp, CoCoOp), and the line saying so:
    a ctx_init given alone sets n_ctx to its words, as released; an n_ctx given alone that disagrees with the
    preset's ctx_init starts the context from random vectors instead."""
    n_ctx, ctx_init = values["n_ctx"], values["ctx_init"]
    if not ctx_init or not coop_context_conflict(n_ctx, ctx_init):
        return {}, ""
    words = len(ctx_init.split(" "))
    if "ctx_init" in given and "n_ctx" not in given:
        return {"n_ctx": words}, ""  # as released, and as documented: nothing to say
    if "n_ctx" in given and "ctx_init" not in given:
        return {"ctx_init": ""}, (f"n_ctx={n_ctx} given: the context starts from {n_ctx} random vectors, not from "
                                  f"ctx_init {ctx_init!r} ({words} words); give ctx_init {n_ctx} words to start from words")
    return {}, ""


def reconcile_deep_context(values: dict, given: set[str]) -> tuple[dict, str]:
    """IVLP, MaPLe, PromptSRC: the released code uses ctx_init only up to 4 tokens; with a larger n_ctx given
    alone the prompts start from random vectors, and the record says so."""
    if values["n_ctx"] > DEEP_CTX_INIT_MAX and values["ctx_init"] and "ctx_init" not in given:
        return {"ctx_init": ""}, (f"n_ctx={values['n_ctx']}: the prompts start from random vectors (ctx_init is used "
                                  f"only up to {DEEP_CTX_INIT_MAX} tokens, as released)")
    return {}, ""


def deep_context_conflict(n_ctx: int, ctx_init: str) -> str:
    if n_ctx > DEEP_CTX_INIT_MAX and ctx_init:
        return (f"ctx_init {ctx_init!r} with n_ctx {n_ctx}: the released code uses ctx_init only up to "
                f"{DEEP_CTX_INIT_MAX} tokens; set ctx_init none, or n_ctx {DEEP_CTX_INIT_MAX} or less")
    return ""


def coop_n_ctx(n_ctx: int, ctx_init: str) -> int:
    """CoOp's and CoCoOp's number of context tokens: with ``ctx_init`` the number of its words (the released
    code ignores N_CTX then), else ``n_ctx``."""
    return len(ctx_init.split(" ")) if ctx_init else n_ctx


def deep_ctx_init(n_ctx: int, ctx_init: str) -> str:
    """The ``ctx_init`` that IVLP and MaPLe actually use: none when ``n_ctx > 4`` (see DEEP_CTX_INIT_MAX)."""
    return ctx_init if n_ctx <= DEEP_CTX_INIT_MAX else ""


def random_prompts(*shape: int) -> nn.Parameter:
    """Prompt vectors drawn from N(0, 0.02^2), the field's initialisation."""
    return nn.Parameter(torch.randn(*shape) * PROMPT_STD)


def context_from_text(clip: PromptCLIP, text: str, n_ctx: int) -> torch.Tensor:
    """The token embeddings of the first ``n_ctx`` tokens of ``text`` (e.g. "a photo of a"): [n_ctx, d]."""
    tokens = clip.tokenize([text])
    n_tokens = int(clip.eot_index(tokens)[0]) - 1
    if n_tokens < n_ctx:
        raise MetapromptError(f"ctx_init {text!r} has {n_tokens} tokens, fewer than n_ctx={n_ctx}; "
                              "use a longer ctx_init or a smaller n_ctx")
    with torch.no_grad():
        return clip.token_embeddings(tokens)[0, 1:1 + n_ctx].detach().float().cpu()


def deep_prompts(clip: PromptCLIP, depth: int, n_ctx: int, width: int, layers: int,
                 ctx_init: str = "", option: str = "depth") -> nn.Parameter:
    """[depth, n_ctx, width] prompts: random, with layer 0 taken from ``ctx_init`` when given. ``option``: the
    method's option that sets ``depth`` (named when it is out of range)."""
    if not 1 <= depth <= layers:
        raise MetapromptError(f"prompt depth {depth} is outside 1..{layers}: the encoder has {layers} blocks "
                              f"(set {option} to at most {layers}, e.g. --set {option}={layers})")
    prompts = random_prompts(depth, n_ctx, width)
    if ctx_init:
        with torch.no_grad():
            prompts[0] = context_from_text(clip, ctx_init, n_ctx)
    return prompts


class ClassPrompts(nn.Module):
    """The tokenised prompt of every class, ``"<prefix> <class name>."``, and where learned context goes.

    ``prefix`` is ``ctx_init`` when given, else ``n_ctx`` placeholder words; the learned context overwrites
    the first ``n_ctx`` prefix tokens. ``position`` places the class name after (``end``), inside
    (``middle``) or before (``front``) the context, as in CoOp. Class names go in as
    :func:`metaprompt.templates.prompt_classname` spells them. Its tensors are buffers (not saved): they follow
    the method to another device.
    """

    def __init__(self, clip: PromptCLIP, classnames: list[str], n_ctx: int, ctx_init: str = "",
                 position: str = "end"):
        super().__init__()
        if position not in CLASS_TOKEN_POSITIONS:
            raise MetapromptError(f"class_token_position {position!r}; expected one of {', '.join(CLASS_TOKEN_POSITIONS)}")
        self.n_ctx = n_ctx
        names = prompt_classnames(classnames)
        prefix = ctx_init or " ".join([PLACEHOLDER] * n_ctx)
        name_lengths = (clip.eot_index(clip.tokenize(names)) - 1).tolist()
        texts, positions = [], []
        for name, length in zip(names, name_lengths):
            text, pos = _place(prefix, name, n_ctx, length, position)
            texts.append(text)
            positions.append(pos)
        tokens = clip.tokenize(texts)
        eot = clip.eot_index(tokens)
        self.max_length = int(eot.max()) + 1
        """Tokens up to the last EOT of any class: all the causal text encoder needs (read once, not per call)."""
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("eot", eot, persistent=False)
        self.register_buffer("positions", torch.tensor(positions, dtype=torch.long, device=tokens.device),
                             persistent=False)
        self.contiguous = position == "end"
        with torch.no_grad():
            self.register_buffer("embeddings", clip.token_embeddings(tokens).detach(), persistent=False)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def embed(self, ctx: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Input embeddings [C, L, d] with ``ctx`` ([n_ctx, d] shared or [C, n_ctx, d] per class) in place,
        for all classes or the class ids in ``classes``."""
        base = self.embeddings if classes is None else self.embeddings[classes]
        ctx = ctx.to(base.dtype)
        if self.contiguous:
            ctx = ctx.expand(base.shape[0], -1, -1) if ctx.dim() == 2 else ctx
            return torch.cat([base[:, :1], ctx, base[:, 1 + self.n_ctx:]], dim=1)
        positions = self.positions if classes is None else self.positions[classes]
        x = base.clone()
        rows = torch.arange(x.shape[0], device=x.device)[:, None]
        x[rows, positions] = ctx.expand(x.shape[0], -1, -1) if ctx.dim() == 2 else ctx
        return x

    def eot_of(self, classes: torch.Tensor | None = None) -> torch.Tensor:
        return self.eot if classes is None else self.eot[classes]

    def features(self, clip: PromptCLIP, ctx: torch.Tensor, deep: torch.Tensor | None = None,
                 classes: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised text features [C, D]: ``ctx`` as layer 0, ``deep`` [depth, n_ctx, d] for layers 1+."""
        with clip.autocast():
            x = self.embed(ctx, classes)
            text = clip.encode_text_embeddings(x, self.eot_of(classes), deep, length=self.max_length)
            return F.normalize(text.to(clip.feature_dtype), dim=-1)


def _place(prefix: str, name: str, n_ctx: int, name_len: int, position: str) -> tuple[str, list[int]]:
    """The prompt text for one class and the token positions of its ``n_ctx`` context tokens."""
    if position == "end":
        return f"{prefix} {name}.", list(range(1, 1 + n_ctx))
    if position == "front":
        return f"{name} {prefix}.", list(range(1 + name_len, 1 + name_len + n_ctx))
    half = n_ctx // 2
    words = prefix.split(" ")
    text = f"{' '.join(words[:half])} {name} {' '.join(words[half:])}.".strip()
    return text, list(range(1, 1 + half)) + list(range(1 + half + name_len, 1 + n_ctx + name_len))
