"""How far the released "fp32" paths' ``.half()`` rounding moves results (docs/parity.md quotes this output).

The multimodal-prompt-learning blocks (VPT, IVLP, MaPLe) and PromptSRC round their prompts with ``.half()``
before concatenating them even with PREC fp32, and PromptSRC rounds its frozen text features; the goldens are
made without that rounding (the fp32 computation this project does). This runs each named case of cases.py as
reference_worker.py does, once without the rounding and once as released, and prints, per case, the largest
difference of the eval logits (initial tensors) and of each trained tensor after the case's steps, absolute and
relative to the tensor's largest magnitude. One repository per process, as reference_worker.py:

    python tools/parity/rounding_worker.py --repo REFS/multimodal-prompt-learning --dassl REFS/Dassl.pytorch \\
        --fixture FIXTURE.pt --inputs tests/goldens/inputs.safetensors vpt ivlp maple
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parent))
import cases as case_table  # noqa: E402
import reference_env as env  # noqa: E402
import reference_worker as worker  # noqa: E402


def differences(plain: dict, released: dict) -> dict[str, tuple[float, float]]:
    keys = [k for k in plain if k == "eval.logits" or k.startswith("trained.")]
    return {k: (float((released[k] - plain[k]).abs().max()),
                float((released[k] - plain[k]).abs().max() / plain[k].abs().max().clamp(min=1e-12))) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, required=True)
    parser.add_argument("--dassl", type=Path, required=True)
    parser.add_argument("--fixture", type=Path, required=True, help="the fixture CLIP (OpenAI-format .pt)")
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--rounding", choices=["released", "values"], default="released",
                        help="released: .half() as the released code runs it; values: fp16-rounded values kept in "
                             "fp32 (where the released dtype mix cannot run in fp32: PromptSRC)")
    parser.add_argument("cases", nargs="+")
    args = parser.parse_args()
    train_module = worker.env.enter_repository(args.repo, args.dassl)
    env.use_fixture_weights(args.fixture)
    if any(case_table.CASES[n]["trainer"] == "PromptSRC" for n in args.cases):
        env.fp32_clip("trainers.promptsrc")
    images = load_file(str(args.inputs))["images"]
    work = Path(tempfile.mkdtemp(prefix="rounding-"))
    for name in args.cases:
        runs = {}
        for kind, rounding in (("plain", "none"), ("released", args.rounding)):
            (work / kind).mkdir(exist_ok=True)
            worker.HALF_ROUNDING = rounding
            worker.run_case(name, case_table.CASES[name], train_module, args.repo, images, work / kind)
            runs[kind] = load_file(str(work / kind / f"{name}.safetensors"))
        for key, (absolute, relative) in differences(runs["plain"], runs["released"]).items():
            print(f"ROUNDING ({args.rounding}) {name} {key}: max |released - fp32| = {absolute:.2e} ({relative:.2e} of its scale)",
                  flush=True)


if __name__ == "__main__":
    main()
