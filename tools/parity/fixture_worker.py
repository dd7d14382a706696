"""The fixture CLIP: a small random CLIP in OpenAI's checkpoint format, made with the reference ``clip``
package's own ``CLIP`` class (so its keys and shapes are OpenAI's), loadable by OpenAI's ``clip.build_model``
and by open_clip.

- ViT: width 128 (2 heads), 3 layers, patch 32 at 224 px; text: width 64 (1 head), 3 layers, 77 tokens and
  OpenAI's 49408-token vocabulary (the prompt learners assert both sizes); embeddings of 32.
- Weights: the reference CLIP's own initialisation after ``torch.manual_seed(0)``, stored in fp16, so that
  ``clip.build_model`` (which casts to fp16) and open_clip (fp32) load identical values.
- Token embeddings are random for ids below RANDOM_TOKENS, for SOT / EOT and for every token the goldens'
  texts use (class names, templates, placeholders), zero elsewhere, which keeps the gzipped file small.
- Like a state dict taken from OpenAI's TorchScript file, it holds ``input_resolution``, ``context_length``
  and ``vocab_size`` beside the weights (``clip.build_model`` deletes them).

Writes ``<out>/tiny_openai_clip.pt.gz`` and the open_clip model config ``<out>/tiny_openai_clip.json``
(``quick_gelu: false``, the config's default: the loader must choose QuickGELU from the weights).
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import cases as case_table  # noqa: E402
import reference_env as env  # noqa: E402

DIMS = dict(embed_dim=32, image_resolution=case_table.IMAGE_SIZE, vision_layers=3, vision_width=128,
            vision_patch_size=32, context_length=77, vocab_size=49408, transformer_width=64, transformer_heads=1,
            transformer_layers=3)
RANDOM_TOKENS = 10000
SOT, EOT = 49406, 49407
NAME = "tiny_openai_clip"


def open_clip_config() -> dict:
    d = DIMS
    return {"embed_dim": d["embed_dim"], "quick_gelu": False,
            "vision_cfg": {"image_size": d["image_resolution"], "layers": d["vision_layers"], "width": d["vision_width"],
                           "patch_size": d["vision_patch_size"], "head_width": 64},
            "text_cfg": {"context_length": d["context_length"], "vocab_size": d["vocab_size"],
                         "width": d["transformer_width"], "heads": d["transformer_heads"],
                         "layers": d["transformer_layers"]}}


def used_texts() -> list[str]:
    """Every text the goldens tokenise (class names in each template style, the placeholders, ctx_init)."""
    from trainers.imagenet_templates import IMAGENET_TEMPLATES, IMAGENET_TEMPLATES_SELECT
    from trainers.zsclip import CUSTOM_TEMPLATES

    names = case_table.CLASSES + [c.replace("_", " ") for c in case_table.CLASSES]
    templates = [*CUSTOM_TEMPLATES.values(), *IMAGENET_TEMPLATES, *IMAGENET_TEMPLATES_SELECT, "a photo of a {}",
                 "{} texture", "a photo of a {}, a type of pet", "itap of a {}", "a bad photo of the {}",
                 "a origami {}", "a photo of the large {}", "a {} in a video game", "art of the {}",
                 "a photo of the small {}"]
    return [t.format(n) for t in templates for n in names] + ["X X X X " + n + "." for n in names]


def build(out: Path, work: Path) -> Path:
    """Write the gzipped fixture and its config into ``out``, the plain .pt into ``work``; return the .pt."""
    from clip import clip as reference_clip
    from clip.model import CLIP

    torch.manual_seed(0)
    state = {k: v.detach().half() for k, v in CLIP(**DIMS).state_dict().items()}
    keep = torch.zeros(DIMS["vocab_size"], dtype=torch.bool)
    keep[:RANDOM_TOKENS] = True
    keep[[SOT, EOT]] = True
    keep[torch.cat([reference_clip.tokenize(t) for t in used_texts()]).unique()] = True
    state["token_embedding.weight"][~keep] = 0
    state |= {"input_resolution": torch.tensor(DIMS["image_resolution"]),
              "context_length": torch.tensor(DIMS["context_length"]), "vocab_size": torch.tensor(DIMS["vocab_size"])}
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    pt = work / f"{NAME}.pt"
    torch.save(state, pt)
    reference_clip.build_model(torch.load(pt, weights_only=True))  # OpenAI's builder loads it
    with open(pt, "rb") as src, gzip.GzipFile(out / f"{NAME}.pt.gz", "wb", mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    (out / f"{NAME}.json").write_text(json.dumps(open_clip_config(), indent=1) + "\n")
    return pt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True, help="a checkout of KaiyangZhou/CoOp")
    parser.add_argument("--dassl", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="where the .pt.gz and .json go (committed)")
    parser.add_argument("--work", type=Path, required=True, help="where the plain .pt goes (not committed)")
    args = parser.parse_args()
    env.enter_repository(args.repo, args.dassl)
    print(f"fixture: {build(args.out, args.work)}")


if __name__ == "__main__":
    main()
