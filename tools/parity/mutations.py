"""Each deviation from the released code that was fixed has a test that fails without its fix: put each one
back, in a scratch copy of the tree, and run the tests that must catch it.

    python tools/parity/mutations.py            # in the project's environment; a few minutes
    python tools/parity/mutations.py import:    # only the mutations whose description holds "import:"

Prints one line per mutation (how many tests fail, and the first) and exits 1 if any mutation goes unnoticed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARITY = "tests/test_parity.py"
DATA = "tests/test_parity_data.py tests/test_data_readers.py tests/test_data_fewshot.py tests/test_protocols.py"
IMPORT = "tests/test_import.py"

# (what was wrong, file, the fixed text, the text that put the deviation back, the tests that must catch it)
MUTATIONS = [
    ("PromptSRC's frozen text features normalised before the template mean", "src/metaprompt/methods/promptsrc.py",
     "frozen = self.clip.mean_template_features(", "frozen = self.clip.zero_shot_classifier(", PARITY),
    ("PromptSRC's Gaussian weights over 0-based epochs", "src/metaprompt/methods/promptsrc.py",
     "for e in range(1, epochs + 1)]", "for e in range(epochs)]", PARITY),
    ("the linear probe's C search ties to the upper end", "src/metaprompt/methods/linear_probe.py",
     "        if acc_left < acc_right:", "        if acc_left <= acc_right:", PARITY),
    ("the linear probe's first interval two decades wide", "src/metaprompt/methods/linear_probe.py",
     "    left, right = 0.1 * peak, 10.0 * peak", "    left, right = 0.01 * peak, 100.0 * peak", PARITY),
    ("KgCoOp without its distance to the hand-crafted features", "src/metaprompt/methods/kgcoop.py",
     "+ self.cfg.w * self.knowledge_distance(text) / world_size()", "+ 0.0 * self.knowledge_distance(text)", PARITY),
    ("KgCoOp's hand-crafted features from the template ensemble", "src/metaprompt/methods/kgcoop.py",
     'templates_for(self.dataset, "zero_shot")', 'templates_for(self.dataset, "imagenet_select")', PARITY),
    ("GELU for OpenAI's weights", "src/metaprompt/weights.py", "    return bool(trained_with)", "    return False",
     PARITY),
    ("OpenAI state dicts keep input_resolution / context_length / vocab_size", "src/metaprompt/weights.py",
     "    weights = {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS}", "    weights = dict(state)",
     "tests/test_weights.py"),
    ("the LR schedule one epoch ahead", "src/metaprompt/engine.py",
     "math.cos(math.pi * (epoch - cfg.warmup_epochs) / cfg.epochs)", "math.cos(math.pi * epoch / cfg.epochs)", PARITY),
    ("VPT at LR 0.0035", "src/metaprompt/presets/vpt.yaml", "lr: 0.0025", "lr: 0.0035", PARITY),
    ("zero-shot and VPT templates with raw class names", "src/metaprompt/methods/base.py",
     "zero_shot_classifier(prompt_classnames(self.classnames), self.templates())",
     "zero_shot_classifier(self.classnames, self.templates())", PARITY),
    ("VPT's frozen text without its full stop", "src/metaprompt/methods/vpt.py",
     'template: str = "a photo of a {}."', 'template: str = "a photo of a {}"', PARITY),
    ("MaPLe's deep couplings initialised independently", "src/metaprompt/methods/maple.py",
     "*(copy.deepcopy(deep) for _ in range(depth - 1))", "*(nn.Linear(d_text, d_vis) for _ in range(depth - 1))", PARITY),
    ("MaPLe's cross-dataset config", "src/metaprompt/presets/maple_xd.yaml", "lr: 0.0026, epochs: 2",
     "lr: 0.0035, epochs: 5", PARITY),
    ("CoOp's 200 epochs on ImageNet", "src/metaprompt/presets/coop_b2n.yaml",
     "vit_b16_ep50_ctxv1.yaml, train: {epochs: 50}}", "vit_b16_ep50_ctxv1.yaml, train: {epochs: 200}}",
     f"{PARITY} tests/test_presets.py"),
    ("MetaPrompt's class split by a fixed seed", "src/metaprompt/methods/metaprompt.py",
     "        self.split_random = random.Random(seed)", "        self.split_random = random.Random(1)", PARITY),
    ("MetaPrompt's class split in floor(n / N) chunks", "src/metaprompt/methods/domain_split.py",
     "    size = math.ceil(len(ids) / n_splits)", "    size = len(ids) // n_splits", PARITY),
    ("released: torch 2 zero_grad", "src/metaprompt/methods/metaprompt.py",
     '        self.zero_grad_to_none = self.cfg.compat == "clean"', "        self.zero_grad_to_none = True", PARITY),
    ("released: clean domain episodes", "src/metaprompt/methods/metaprompt.py",
     'released=self.cfg.compat == "released")', "released=False)", PARITY),
    ("released: clean restore", "src/metaprompt/methods/domain_split.py", "    if released:\n        prompts.data = saved",
     "    if False:\n        prompts.data = saved", PARITY),
    ("few-shot groups sampled in path order", "src/metaprompt/data/fewshot.py",
     "    return [group for labels in by_domain.values() for group in labels.values()]",
     "    return [sorted(g, key=lambda d: d.impath) for labels in by_domain.values() for g in labels.values()]", DATA),
    ("few-shot classes drawn in label order", "src/metaprompt/data/fewshot.py",
     "    return [group for labels in by_domain.values() for group in labels.values()]",
     "    return [labels[k] for _, labels in sorted(by_domain.items()) for k in sorted(labels)]", DATA),
    ("a short class drawn with random.sample (or refused)", "src/metaprompt/data/fewshot.py",
     "for d in (rng.sample(group, shots) if len(group) >= shots else group)]",
     "for d in rng.sample(group, min(shots, len(group)))]", DATA),
    ("VLCS classes named after their numbered folders", "src/metaprompt/data/dg.py",
     "    if not layout.classnames:", "    if True:", DATA),
    ("VLCS / OfficeHome / ImageNet images in name order", "src/metaprompt/data/layout.py",
     "    return found if order == AS_LISTED else sorted(found)", "    return sorted(found)", DATA),
    ("DomainNet val shots from the sources' train", "src/metaprompt/data/fewshot.py",
     'DG_VAL_SPLITS: dict[str, str] = {"domainnet": "test"}', "DG_VAL_SPLITS: dict[str, str] = {}", DATA),
    ("hidden files counted as images", "src/metaprompt/data/layout.py",
     '        return [e for e in entries if not e.name.startswith(".")]', "        return list(entries)", DATA),
    ("ImageNet labels in classnames.txt order", "src/metaprompt/data/imagenet.py",
     "    wnids = sorted(classnames)", "    wnids = list(classnames)", DATA),
    ("import: MaPLe's compound text prompts from layer 0", "src/metaprompt/dassl_checkpoint.py",
     'lambda m: ("text_prompts", int(m[1]) + 1)', 'lambda m: ("text_prompts", int(m[1]))', IMPORT),
    ("import: MaPLe's deep couplings one layer down", "src/metaprompt/dassl_checkpoint.py",
     'lambda m: (f"couplings.{int(m[1]) + 1}.{m[2]}", None)', 'lambda m: (f"couplings.{int(m[1])}.{m[2]}", None)',
     IMPORT),
    ("import: CoCoOp's meta-net layers swapped", "src/metaprompt/dassl_checkpoint.py",
     'lambda m: (f"meta_net.2.{m[1]}", None)', 'lambda m: (f"meta_net.0.{m[1]}", None)', IMPORT),
    ("import: the prompt learner's own keys (CoOp's file) not prefixed", "src/metaprompt/dassl_checkpoint.py",
     '    if "ctx" in state:', '    if False:', IMPORT),
]


def copy_tree(target: Path) -> None:
    ignored = shutil.ignore_patterns(".git", "*.egg-info", "__pycache__", ".pytest_cache")
    shutil.copytree(ROOT, target, ignore=ignored)


def run(target: Path, tests: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(target / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests.split()],
                          cwd=target, env=env, capture_output=True, text=True)
    return [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]


def main() -> int:
    """Every mutation, or those whose description holds one of the command's arguments."""
    unnoticed = 0
    chosen = [m for m in MUTATIONS if not sys.argv[1:] or any(word in m[0] for word in sys.argv[1:])]
    with tempfile.TemporaryDirectory(prefix="mutations-") as scratch:
        for what, file, fixed, broken, tests in chosen:
            target = Path(scratch) / "tree"
            shutil.rmtree(target, ignore_errors=True)
            copy_tree(target)
            path = target / file
            text = path.read_text()
            if fixed not in text:
                raise SystemExit(f"{file}: the fixed text of mutation {what!r} is not there any more")
            path.write_text(text.replace(fixed, broken, 1))
            failing = run(target, tests)
            unnoticed += not failing
            first = failing[0].split(" - ")[0] if failing else "NONE: the deviation goes unnoticed"
            print(f"{len(failing):3d} failing  {what}  (first: {first})", flush=True)
    return 1 if unnoticed else 0


if __name__ == "__main__":
    sys.exit(main())
