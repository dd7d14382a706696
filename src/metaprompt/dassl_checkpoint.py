"""The released trainers' Dassl checkpoints, read without running pickled code, and their trained tensors under
this project's names (``metaprompt import``).

A released trainer's ``save_model`` (Dassl's) writes ``<output>/<learner>/model.pth.tar-<epoch>`` (and
``model-best.pth.tar`` when it selects on val) with ``torch.save`` of ``{state_dict, epoch, optimizer, scheduler,
val_result}``. The scheduler's state holds pickled scheduler objects, which ``torch.load(weights_only=True)``
refuses and a plain ``torch.load`` would construct by running code the file names. Here the file is unpickled
with an allow-list: tensors, their storages, dtypes and ordered dicts are rebuilt; every other object the file
names becomes an inert :class:`Opaque` holding its arguments, and nothing it names is imported or called.

The learner folder is ``prompt_learner`` for CoOp, CoCoOp, KgCoOp (whose file holds only the prompt learner:
``ctx``, ``token_prefix``, ...) and VPT, ``VLPromptLearner`` for IVLP and PromptSRC, ``MultiModalPromptLearner``
for MaPLe, ``model`` for MetaPrompt; for all but the first three the file holds the whole model, CLIP included,
whose frozen weights are ignored here (the artifact holds only what was trained).
"""
from __future__ import annotations

import collections
import hashlib
import pickle
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import MetapromptError

LEARNER_FOLDERS = {"coop": "prompt_learner", "cocoop": "prompt_learner", "kgcoop": "prompt_learner",
                   "vpt": "prompt_learner", "ivlp": "VLPromptLearner", "promptsrc": "VLPromptLearner",
                   "maple": "MultiModalPromptLearner", "metaprompt": "model"}
"""Method -> the folder its released trainer's ``register_model`` name gives under the output folder."""
BEST, EPOCH_PREFIX = "model-best.pth.tar", "model.pth.tar-"

Target = tuple[str, int | None]
Rule = tuple[str, Target | Callable[[re.Match], Target]]
CTX = r"^prompt_learner\.ctx$"
TEXT_DEEP = r"^text_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow$"
VISION_FIRST = r"^image_encoder\.VPT$"
VISION_DEEP = r"^image_encoder\.transformer\.resblocks\.(\d+)\.VPT_shallow$"
IVLP_RULES: list[Rule] = [(CTX, ("text_prompts", 0)), (TEXT_DEEP, lambda m: ("text_prompts", int(m[1]))),
                          (VISION_FIRST, ("visual_prompts", 0)), (VISION_DEEP, lambda m: ("visual_prompts", int(m[1])))]
RELEASED_NAMES: dict[str, list[Rule]] = {
    "coop": [(CTX, ("text_prompts", 0))],
    "coop-csc": [(CTX, ("class_text_prompts", None))],
    "cocoop": [(CTX, ("text_prompts", 0)),
               (r"^prompt_learner\.meta_net\.linear1\.(weight|bias)$", lambda m: (f"meta_net.0.{m[1]}", None)),
               (r"^prompt_learner\.meta_net\.linear2\.(weight|bias)$", lambda m: (f"meta_net.2.{m[1]}", None))],
    "kgcoop": [(CTX, ("text_prompts", 0))],
    "vpt": [(VISION_FIRST, ("visual_prompts", 0)), (VISION_DEEP, lambda m: ("visual_prompts", int(m[1])))],
    "ivlp": IVLP_RULES,
    "promptsrc": IVLP_RULES,
    "maple": [(CTX, ("text_prompts", 0)),
              (r"^prompt_learner\.compound_prompts_text\.(\d+)$", lambda m: ("text_prompts", int(m[1]) + 1)),
              (r"^prompt_learner\.proj\.(weight|bias)$", lambda m: (f"couplings.0.{m[1]}", None)),
              (r"^prompt_learner\.compound_prompt_projections\.(\d+)\.(weight|bias)$",
               lambda m: (f"couplings.{int(m[1]) + 1}.{m[2]}", None))],
    "metaprompt": [(CTX, ("text_prompts", None)), (r"^vision_prompt_learner\.ctx$", ("visual_prompts", None))],
}
"""Released parameter name -> (this project's tensor name, layer index, or None for the whole tensor), per method
(``coop-csc``: CoOp with class-specific contexts). Layers of one tensor are stacked in index order."""


def released_target(rules: list[Rule], name: str) -> Target | None:
    """This project's (tensor, layer) for the released parameter ``name``, or None when no rule names it."""
    for pattern, target in rules:
        match = re.match(pattern, name)
        if match:
            return target(match) if callable(target) else target
    return None


def stacked(named: dict[str, tuple[torch.Tensor, Target]], source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """This project's tensors (fp32) from released tensors with their targets: layers stacked in order, which
    must run 0..n-1."""
    layers: dict[str, dict[int, torch.Tensor]] = {}
    whole = {}
    for tensor, (ours, index) in named.values():
        if index is None:
            whole[ours] = tensor.detach().float().clone()
        else:
            layers.setdefault(ours, {})[index] = tensor.detach().float().clone()
    for ours, by_index in layers.items():
        if sorted(by_index) != list(range(len(by_index))):
            raise MetapromptError(f"{source}: the layers of {ours} are {sorted(by_index)}; expected 0..{len(by_index) - 1}")
        whole[ours] = torch.stack([by_index[i] for i in range(len(by_index))])
    return whole


# ---------------------------------------------------------------- reading the file without running its code

class Opaque:
    """Stands for an object the checkpoint pickles that is neither a tensor nor a plain container (an LR
    scheduler, an optimizer's class...): it keeps what the file gave it and does nothing."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # what a pickled mapping or list of it is filled with, kept
        self.__dict__.setdefault("items", []).append((key, value))

    def append(self, value):
        self.__dict__.setdefault("items", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("items", []).extend(values)


ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict, ("collections", "defaultdict"): collections.defaultdict,
           **{("builtins", kind.__name__): kind for kind in (dict, list, set, frozenset, tuple)},
           ("torch", "Size"): torch.Size,
           ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
           ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter}
"""The callables a checkpoint may name (as ``torch.load(weights_only=True)`` allows them); dtypes too."""


PYTHON2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        module = PYTHON2_MODULES.get(module, module)  # torch pickles with protocol 2, which spells them so
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        return type(name, (Opaque,), {"__module__": f"opaque:{module}"})


SAFE_PICKLE = types.SimpleNamespace(__name__="metaprompt.dassl_checkpoint.safe_pickle", Unpickler=_Unpickler,
                                    load=lambda f, **kw: _Unpickler(f, **kw).load())
"""What ``torch.load`` unpickles with (its ``pickle_module``): torch rebuilds the storages, this the rest."""


@dataclass
class DasslCheckpoint:
    """What a Dassl checkpoint file holds that matters here."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    epoch: int | None
    val_result: float | None
    sha256: str


def read_checkpoint(path: str | Path) -> DasslCheckpoint:
    """The checkpoint at ``path``, read without running any code it names."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", pickle_module=SAFE_PICKLE, weights_only=False)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            KeyError, IndexError) as err:
        raise MetapromptError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:200]}); expected a file a released trainer's "
                              "save_model wrote (model.pth.tar-N)") from None
    state = data.get("state_dict") if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise MetapromptError(f"{path}: not a Dassl checkpoint (expected a dict whose 'state_dict' maps parameter "
                              "names to tensors, as Dassl's save_checkpoint writes)")
    epoch, val = data.get("epoch"), data.get("val_result")
    return DasslCheckpoint(path, dict(state), epoch if isinstance(epoch, int) else None,
                           float(val) if isinstance(val, (int, float)) else None,
                           _sha256(path))


def _sha256(path: Path) -> str:
    """The file's SHA-256, read in chunks (released files reach 800 MB)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def find_checkpoint(path: str | Path, method: str, epoch: int | None = None) -> Path:
    """The checkpoint file ``path`` names: the file itself, or in an output folder (or its learner folder) the
    file Dassl's ``load_model`` would load: ``model.pth.tar-<epoch>`` with ``epoch``, else ``model-best.pth.tar``
    (else the one ``model.pth.tar-N`` there is)."""
    path = Path(path)
    if path.is_file():
        if epoch is not None:
            raise MetapromptError(f"--epoch {epoch} with a checkpoint file ({path}); expected the output folder "
                                  "with --epoch, or the file alone")
        return path
    if not path.is_dir():
        raise MetapromptError(f"{path} does not exist (expected a released trainer's output folder or a "
                              "model.pth.tar-N file)")
    learner = LEARNER_FOLDERS[method]
    folder = path / learner if (path / learner).is_dir() else path
    wanted = folder / (f"{EPOCH_PREFIX}{epoch}" if epoch is not None else BEST)
    if wanted.is_file():
        return wanted
    epochs = sorted(p.name for p in folder.glob(f"{EPOCH_PREFIX}*"))
    if epoch is None and len(epochs) == 1:
        return folder / epochs[0]
    where = f"{folder} (the {learner}/ folder of {method}'s released trainer)" if folder != path else str(folder)
    found = f"found {', '.join(epochs)}" if epochs else f"found no {EPOCH_PREFIX}N or {BEST}"
    raise MetapromptError(f"no {wanted.name} in {where}; {found}"
                          + ("; pick one with --epoch N" if len(epochs) > 1 else ""))


def released_tensors(checkpoint: DasslCheckpoint, method: str) -> dict[str, torch.Tensor]:
    """The trained tensors of ``method`` in ``checkpoint``, under this project's names (fp32)."""
    state = checkpoint.state_dict
    if "ctx" in state:  # CoOp, CoCoOp, KgCoOp register the prompt learner alone: its keys have no prefix
        state = {f"prompt_learner.{k}": v for k, v in state.items()}
    key = "coop-csc" if method == "coop" and state.get("prompt_learner.ctx", torch.empty(0)).dim() == 3 else method
    rules = RELEASED_NAMES[key]
    named = {name: (tensor, target) for name, tensor in state.items()
             if (target := released_target(rules, name)) is not None}
    if not named:
        expected = ", ".join(pattern.strip("^$").replace("\\", "") for pattern, _ in rules[:3])
        raise MetapromptError(f"{checkpoint.path}: no trained tensor of {method}'s released trainer (expected keys "
                              f"such as {expected}; found {', '.join(list(state)[:5]) or 'none'}...). Is it "
                              "another method's checkpoint?")
    return stacked(named, str(checkpoint.path))


# ---------------------------------------------------------------- the options a checkpoint's shapes fix

TEXT_OPTIONS = {"coop": ("n_ctx", None), "cocoop": ("n_ctx", None), "kgcoop": ("n_ctx", None),
                "ivlp": ("n_ctx", "text_depth"), "promptsrc": ("n_ctx", "text_depth"),
                "metaprompt": ("n_ctx", "text_depth"), "maple": ("n_ctx", "depth")}
VISION_OPTIONS = {"vpt": ("n_vis", "depth"), "ivlp": ("n_vis", "vision_depth"), "promptsrc": ("n_vis", "vision_depth"),
                  "metaprompt": ("n_vis", "vision_depth")}
"""Method -> the config options that a [depth, tokens, width] prompt tensor's tokens and depth give."""


def shape_options(method: str, tensors: dict[str, torch.Tensor]) -> dict[str, object]:
    """The config options the imported tensors' shapes fix (prompt tokens and depths; CoOp's class-specific
    contexts), which the artifact's config must hold for the prompts to be read as trained."""
    options: dict[str, object] = {}
    for name, table in (("text_prompts", TEXT_OPTIONS), ("visual_prompts", VISION_OPTIONS)):
        if name in tensors and method in table:
            tokens, depth = table[method]
            options[tokens] = int(tensors[name].shape[1])
            if depth is not None:
                options[depth] = int(tensors[name].shape[0])
    if "class_text_prompts" in tensors:
        options |= {"n_ctx": int(tensors["class_text_prompts"].shape[1]), "class_specific": True}
    return options


# ---------------------------------------------------------------- whose CLIP the checkpoint was trained on

PREFIX_KEYS = ("token_prefix", "prompt_learner.token_prefix")
PREFIX_TOLERANCE = 1e-2
"""Of the embedding's scale: a released fp16 checkpoint rounds it (about 5e-4); another CLIP's differs wholly."""


def check_start_token(checkpoint: DasslCheckpoint, clip, model: str) -> None:
    """The released prompt learners save ``token_prefix``, the start token's embedding in their CLIP, beside the
    prompts: where the checkpoint has it, it must be ``clip``'s (else the prompts were trained on another model,
    whose name no Dassl checkpoint records)."""
    saved = next((checkpoint.state_dict[k] for k in PREFIX_KEYS if k in checkpoint.state_dict), None)
    if saved is None or saved.dim() != 3:
        return
    tokens = clip.tokenize([""])[:, :1]
    with torch.no_grad():
        ours = clip.token_embeddings(tokens)[0, 0].float().cpu()
    theirs = saved[0, 0].float()
    if theirs.shape != ours.shape:
        raise MetapromptError(f"{checkpoint.path}: its token embeddings are {theirs.shape[0]} wide, {model}'s "
                              f"{ours.shape[0]}: the checkpoint was trained on another CLIP; pass its --model / "
                              "--pretrained")
    error = float((theirs - ours).abs().max() / ours.abs().max().clamp(min=1e-12))
    if error > PREFIX_TOLERANCE:
        raise MetapromptError(f"{checkpoint.path}: its token_prefix (the start token's embedding in the CLIP it was "
                              f"trained on) differs from {model}'s by {error:.1e} of its scale: the checkpoint was "
                              "trained on another CLIP; pass its --model / --pretrained")


def origin(checkpoint: DasslCheckpoint) -> dict:
    """Where imported prompts came from, as artifacts and run records keep it."""
    return {"path": str(checkpoint.path.resolve()), "sha256": checkpoint.sha256, "epoch": checkpoint.epoch,
            "val_result": checkpoint.val_result}


def load_released(method, checkpoint: DasslCheckpoint, tensors: dict[str, torch.Tensor] | None = None) -> None:
    """The checkpoint's trained tensors (``tensors``, when the caller has taken them already) into ``method`` (built
    with the options the checkpoint's shapes need, on the CLIP it was trained on, which the start token checks
    where the checkpoint has one)."""
    clip = method.clip
    check_start_token(checkpoint, clip, f"{clip.source.name} ({clip.source.pretrained})")
    tensors = released_tensors(checkpoint, method.name) if tensors is None else tensors
    differing = {k: v for k, v in shape_options(method.name, tensors).items() if getattr(method.cfg, k, v) != v}
    if differing:
        ours = ", ".join(f"{k}={getattr(method.cfg, k)}" for k in differing)
        sets = " ".join(f"--set {k}={v}" for k, v in differing.items())
        raise MetapromptError(f"{checkpoint.path}: its prompts have {', '.join(f'{k}={v}' for k, v in differing.items())}"
                              f", this run's config {ours}: pass {sets}")
    method.load_trained_tensors(tensors, source=str(checkpoint.path))
