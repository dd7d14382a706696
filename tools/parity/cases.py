"""What each golden is, in this project's terms and in the reference's (plain data, no reference import).

A case runs one released trainer on the fixture CLIP: the logits of fixed images over fixed class names
(underscores included) for fixed initial tensors, in eval mode; then, when ``steps`` > 0, that many calls of
the trainer's own ``forward_backward`` on fixed batches at ``lr`` (no warm-up), and the trained tensors.
tests/test_parity.py reads everything it needs from the golden file the case produced.
"""
from __future__ import annotations

CLASSES = ["golden_retriever", "sea_lion", "fire_truck", "red_fox", "teddy_bear"]
"""Fixed class names, underscores included (the reference prompts turn them into spaces; some frozen
templates of the released MetaPrompt code do not)."""
SPACED = [c.replace("_", " ") for c in CLASSES]
"""For the clean MetaPrompt cases: the released frozen templates keep underscores, which the clean mode
deliberately does not (docs/parity.md), so these cases use names that have none."""
IMAGE_SIZE, LOW_RES = 224, 28
"""Inputs are drawn at 28 px and upsampled 8x by repetition, so both sides feed identical 224 px tensors."""
N_IMAGES = 48
EVAL = list(range(4))
BATCH = 4


def steps_of(first: int, n_steps: int, batch: int) -> list[list[int]]:
    return [list(range(first + k * batch, first + (k + 1) * batch)) for k in range(n_steps)]


# A batch of each DG step: the domain id of each image (4 source domains). The second batch lacks domain 2,
# which the released code's episodes mishandle (N = 3 distinct domains, so domain 3 is never used).
DG_DOMAINS = [[0, 1, 2, 3, 0, 1, 2, 3], [0, 1, 3, 3, 0, 1, 3, 0], [3, 3, 1, 1, 0, 0, 2, 2]]

CASES: dict[str, dict] = {}


def case(name: str, **spec) -> None:
    spec.setdefault("steps", 0)
    spec.setdefault("classes", CLASSES)
    if spec["steps"]:
        spec.setdefault("step_images", steps_of(EVAL[-1] + 1, spec["steps"], spec.get("batch", BATCH)))
    CASES[name] = spec


# ---------------------------------------------------------------- KaiyangZhou/CoOp (+ Dassl)
COOP = "KaiyangZhou/CoOp"
for dataset_name, key in (("OxfordPets", "oxford_pets"), ("DescribableTextures", "dtd"), ("EuroSAT", "eurosat"),
                          ("Food101", "food101")):
    case(f"zeroshot_{key}", repo=COOP, trainer="ZeroshotCLIP", yaml="configs/trainers/CoOp/vit_b16.yaml",
         reference_dataset=dataset_name, method="zeroshot", dataset=key, config={"templates": "zero_shot"})

COOP_VARIANTS = {  # the options, and an LR at which 3 steps move the context about its own scale
    "end": (dict(N_CTX=4, CTX_INIT="a photo of a", CSC=False, CLASS_TOKEN_POSITION="end"), 0.01),
    "middle": (dict(N_CTX=4, CTX_INIT="a photo of a", CSC=False, CLASS_TOKEN_POSITION="middle"), 0.01),
    "front": (dict(N_CTX=4, CTX_INIT="", CSC=False, CLASS_TOKEN_POSITION="front"), 0.003),
    "csc": (dict(N_CTX=4, CTX_INIT="", CSC=True, CLASS_TOKEN_POSITION="end"), 0.002),
}
for variant, (opts, lr) in COOP_VARIANTS.items():
    case(f"coop_{variant}", repo=COOP, trainer="CoOp", yaml="configs/trainers/CoOp/vit_b16.yaml",
         reference_dataset="OxfordPets", reference_options={f"TRAINER__COOP__{k}": v for k, v in opts.items()}
         | {"TRAINER__COOP__PREC": "fp32"},
         method="coop", dataset="oxford_pets", steps=3, lr=lr,
         config={"n_ctx": opts["N_CTX"], "ctx_init": opts["CTX_INIT"], "class_specific": opts["CSC"],
                 "class_token_position": opts["CLASS_TOKEN_POSITION"]})

case("cocoop", repo=COOP, trainer="CoCoOp", yaml="configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
     reference_dataset="OxfordPets", reference_options={"TRAINER__COCOOP__PREC": "fp32"},
     method="cocoop", dataset="oxford_pets", steps=3, lr=0.3, config={"n_ctx": 4, "ctx_init": "a photo of a"})

# ---------------------------------------------------------------- muzairkhattak/multimodal-prompt-learning
MMPL = "muzairkhattak/multimodal-prompt-learning"
case("vpt", repo=MMPL, trainer="VPT", yaml="configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml",
     reference_dataset="OxfordPets",
     reference_options={"TRAINER__VPT__PREC": "fp32", "TRAINER__VPT__N_CTX_VISION": 4,
                        "TRAINER__VPT__PROMPT_DEPTH_VISION": 3},
     method="vpt", dataset="oxford_pets", steps=3, lr=0.2, config={"n_vis": 4, "depth": 3})
case("ivlp", repo=MMPL, trainer="IVLP", yaml="configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml",
     reference_dataset="OxfordPets",
     reference_options={"TRAINER__IVLP__PREC": "fp32", "TRAINER__IVLP__PROMPT_DEPTH_VISION": 3,
                        "TRAINER__IVLP__PROMPT_DEPTH_TEXT": 3},
     method="ivlp", dataset="oxford_pets", steps=3, lr=0.01,
     config={"n_ctx": 2, "n_vis": 2, "text_depth": 3, "vision_depth": 3, "ctx_init": "a photo of a"})
case("maple", repo=MMPL, trainer="MaPLe", yaml="configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
     reference_dataset="OxfordPets", reference_options={"TRAINER__MAPLE__PREC": "fp32", "TRAINER__MAPLE__PROMPT_DEPTH": 3},
     method="maple", dataset="oxford_pets", steps=3, lr=0.02, config={"n_ctx": 2, "depth": 3, "ctx_init": "a photo of a"})

# ---------------------------------------------------------------- Vill-Lab/2024-TIP-MetaPrompt
META = "Vill-Lab/2024-TIP-MetaPrompt"
META_OPTIONS = {"TRAINER__META__PREC": "fp32", "TRAINER__META__LAYERS": 3, "TRAINER__META__N_CTX": 2,
                "TRAINER__META__N_PRO": 2}
META_CONFIG = {"n_ctx": 2, "n_vis": 2, "text_depth": 3, "vision_depth": 3}
case("metaprompt_eval_imagenet", repo=META, trainer="Meta_B2N", yaml="configs/trainers/Meta_B2N/vit_b16.yaml",
     reference_dataset="ImageNet", reference_options=META_OPTIONS, classes=SPACED, method="metaprompt", dataset="imagenet",
     config=META_CONFIG | {"meta_split": "class"})
case("metaprompt_b2n_clean", repo=META, trainer="Meta_B2N", yaml="configs/trainers/Meta_B2N/vit_b16.yaml",
     reference_dataset="OxfordPets", reference_options=META_OPTIONS, classes=SPACED[:3], seed=1,
     method="metaprompt", dataset="oxford_pets", steps=3, lr=0.02, zero_grad="torch2",
     config=META_CONFIG | {"meta_split": "class", "compat": "clean"},
     note="3 classes: chunks of 2 and 1, so only the first split runs and the restore quirk never acts")
case("metaprompt_b2n_released", repo=META, trainer="Meta_B2N", yaml="configs/trainers/Meta_B2N/vit_b16.yaml",
     reference_dataset="OxfordPets", reference_options=META_OPTIONS, seed=2,
     method="metaprompt", dataset="oxford_pets", steps=3, lr=0.02, zero_grad="torch1",
     config=META_CONFIG | {"meta_split": "class", "compat": "released", "raw_template_names": True})
META_DG_OPTIONS = META_OPTIONS | {"TRAINER__META__N_CTX": 4, "TRAINER__META__N_PRO": 4}
META_DG_CONFIG = {"n_ctx": 4, "n_vis": 4, "text_depth": 3, "vision_depth": 3, "meta_split": "domain"}
case("metaprompt_dg_released", repo=META, trainer="Meta_DG", yaml="configs/trainers/Meta_DG/vit_b16.yaml",
     reference_dataset="PACSFS", reference_options=META_DG_OPTIONS, seed=3, batch=8, domains=DG_DOMAINS,
     method="metaprompt", dataset="pacs", steps=3, lr=0.02, zero_grad="torch1",
     config=META_DG_CONFIG | {"compat": "released", "raw_template_names": True})
case("metaprompt_dg_clean", repo=META, trainer="Meta_DG", yaml="configs/trainers/Meta_DG/vit_b16.yaml",
     reference_dataset="PACSFS", reference_options=META_DG_OPTIONS, seed=3, batch=8, domains=DG_DOMAINS[:1],
     classes=SPACED,
     method="metaprompt", dataset="pacs", steps=1, lr=0.02, zero_grad="torch2", record_episodes=True,
     config=META_DG_CONFIG | {"compat": "clean"},
     note="clean and released share the in-domain step and the first episode's meta-test gradient: the golden "
          "records both (the released restore changes every later episode)")

# ---------------------------------------------------------------- htyao89/KgCoOp
KGCOOP = "htyao89/KgCoOp"
case("kgcoop", repo=KGCOOP, trainer="KgCoOp", yaml="configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
     reference_dataset="OxfordPets",
     reference_options={"TRAINER__COOP__PREC": "fp32", "TRAINER__COOP__N_CTX": 4, "TRAINER__COOP__CSC": False,
                        "TRAINER__COOP__W": 8.0, "TRAINER__COOP__CLASS_TOKEN_POSITION": "end"},
     method="kgcoop", dataset="oxford_pets", steps=3, lr=0.002, config={"n_ctx": 4, "ctx_init": "a photo of a", "w": 8.0},
     note="the hand-crafted features from an fp32 copy of CLIP (the release's copy is fp16: docs/parity.md)")

# ---------------------------------------------------------------- muzairkhattak/PromptSRC
PROMPTSRC = "muzairkhattak/PromptSRC"
PROMPTSRC_OPTIONS = {"TRAINER__PROMPTSRC__PREC": "fp32", "TRAINER__PROMPTSRC__PROMPT_DEPTH_VISION": 3,
                     "TRAINER__PROMPTSRC__PROMPT_DEPTH_TEXT": 3}
PROMPTSRC_CONFIG = {"n_ctx": 4, "n_vis": 4, "text_depth": 3, "vision_depth": 3, "ctx_init": "a photo of a",
                    "text_loss_weight": 25.0, "image_loss_weight": 10.0}
case("promptsrc", repo=PROMPTSRC, trainer="PromptSRC", yaml="configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
     reference_dataset="OxfordPets", reference_options=PROMPTSRC_OPTIONS, method="promptsrc", dataset="oxford_pets",
     steps=3, lr=0.0025, config=PROMPTSRC_CONFIG | {"gpa_mean": 15.0, "gpa_std": 1.0},
     note="the losses: cross-entropy, the two L1 terms and the KL term, 3 steps inside one epoch (no aggregation)")
case("promptsrc_gpa", repo=PROMPTSRC, trainer="PromptSRC", yaml="configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml",
     reference_dataset="OxfordPets", epoch_per_step=True,
     reference_options=PROMPTSRC_OPTIONS | {"OPTIM__MAX_EPOCH": 3, "TRAINER__PROMPTSRC__GPA_MEAN": 2,
                                            "TRAINER__PROMPTSRC__GPA_STD": 1},
     method="promptsrc", dataset="oxford_pets", steps=3, lr=0.0025, config=PROMPTSRC_CONFIG | {"gpa_mean": 2.0, "gpa_std": 1.0},
     note="each step ends an epoch of 3 (the LR held at lr: the schedule is checked apart), so the trained tensors "
          "are the Gaussian aggregate of the three epochs' prompts")

REPOSITORIES = {
    COOP: "CoOp",
    MMPL: "multimodal-prompt-learning",
    META: "2024-TIP-MetaPrompt",
    KGCOOP: "KgCoOp",
    PROMPTSRC: "PromptSRC",
}
"""Each reference repository and the folder name of its checkout under --refs."""
CODE_ROOTS = {KGCOOP: "KgCoOp"}
"""Where train.py lives inside a checkout, when not at its top (case yaml paths are relative to it)."""
OWN_DASSL = {KGCOOP: "Dassl.ProGrad.pytorch"}
"""A repository that ships the Dassl it runs with (a folder of its checkout); the others use Dassl.pytorch."""
