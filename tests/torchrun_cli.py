"""Runs `metaprompt.cli.main` once per command, the commands' arguments separated by ``--then``, stopping at
the first failure: several trainings in one torchrun launch, which saves the tests a launch per training."""
import sys

from metaprompt.cli import main

SEPARATOR = "--then"


def commands(argv: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for arg in argv:
        if arg == SEPARATOR:
            groups.append([])
        else:
            groups[-1].append(arg)
    return groups


def run_all(argv: list[str]) -> int:
    for args in commands(argv):
        code = main(args)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(run_all(sys.argv[1:]))
