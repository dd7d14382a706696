"""`metaprompt config`: the resolved configuration of a run, and its departures, without running it."""
from __future__ import annotations

import argparse

from .common import HelpFormatter, add_config_args, run_config

PROTOCOLS = ("base2new", "dg", "xd", "fewshot")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "config", help="print a run's resolved configuration and its departures, without running",
        description="Resolve the options a `train` or `run` command would get (the preset the method, protocol and "
                    "model start from, then --set, then the model flags, then the preset's variant for the dataset "
                    "and shots) and print them as the run's config.yaml records them, with every departure from "
                    "the published config it follows. Nothing is read from data and no model is loaded.",
        formatter_class=HelpFormatter)
    add_config_args(p)
    p.add_argument("--protocol", choices=PROTOCOLS, default="base2new",
                   help="the protocol whose preset a method starts from (dg: metaprompt_dg for metaprompt, ...)")
    p.add_argument("--dataset", default="", help="the dataset the run is for (picks the preset's variant)")
    p.add_argument("--shots", type=int, default=None, help="training images per class (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the preset's)")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    import yaml

    cfg = run_config(args, {"shots": args.shots, "seed": args.seed}, protocol=args.protocol).for_task(args.dataset)
    record = cfg.to_dict()
    print(yaml.safe_dump(record, sort_keys=False), end="")
    for note in cfg.notes:
        print(f"# note: {note}")
    line = cfg.departure_line()
    print(f"# {line}" if line else f"# no departure from {cfg.follows}" if cfg.follows else
          "# follows no released config file (a project or user preset)")
    return 0
