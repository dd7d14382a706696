"""Dassl's learning rate in every epoch of each schedule (make_goldens.py passes the shipped presets').

Builds an SGD optimiser and Dassl's own ``build_lr_scheduler`` (cosine, constant warm-up, WARMUP_RECOUNT at
its default), reads the LR each epoch trains at, and steps the scheduler at the end of each epoch, as
Dassl's trainers do (``update_lr`` after the last batch).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import reference_env as env  # noqa: E402


def dassl_lrs(settings: dict) -> list[float]:
    from dassl.config import get_cfg_default
    from dassl.optim import build_lr_scheduler

    cfg = get_cfg_default()
    cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH = "sgd", settings["lr"], settings["epochs"]
    cfg.OPTIM.LR_SCHEDULER, cfg.OPTIM.WARMUP_TYPE = "cosine", "constant"
    cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_CONS_LR = settings["warmup_epochs"], settings["warmup_lr"]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=settings["lr"], momentum=0.9)
    scheduler = build_lr_scheduler(optimizer, cfg.OPTIM)
    lrs = []
    for _ in range(settings["epochs"]):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return lrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dassl", type=Path, required=True)
    parser.add_argument("--schedules", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(args.dassl))
    env._accept_positional_verbose()
    schedules = json.loads(args.schedules.read_text())
    table = {name: {**settings, "lr_per_epoch": dassl_lrs(settings)} for name, settings in schedules.items()
             if settings["epochs"] > 0}
    args.out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"  {len(table)} schedules from Dassl's build_lr_scheduler")


if __name__ == "__main__":
    main()
