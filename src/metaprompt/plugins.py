"""Methods and datasets of other packages, registered through entry points (what Dassl's TRAINER_REGISTRY and
DATASET_REGISTRY decorators do inside one codebase): a package declares

    [project.entry-points."metaprompt.methods"]
    my_method = "my_package.method:MyMethod"        # a PromptMethod subclass with its config_class
    [project.entry-points."metaprompt.datasets"]
    my_data = "my_package.data:read_my_data"        # (data root) -> DatasetSplits, its folder ROOT/my_data

and ``metaprompt`` finds them by name once the package is installed (docs/extending.md). No torch here."""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .errors import MetapromptError

METHOD_GROUP = "metaprompt.methods"
DATASET_GROUP = "metaprompt.datasets"


def plugin_names(group: str) -> list[str]:
    return sorted({ep.name for ep in entry_points(group=group)})


def plugin_entry(group: str, name: str) -> EntryPoint | None:
    return next((ep for ep in entry_points(group=group) if ep.name == name), None)


def load(entry: EntryPoint, what: str) -> Any:
    """The object an entry point names; a plugin that fails to import is one line naming it."""
    try:
        return entry.load()
    except Exception as err:  # noqa: BLE001 - whatever the plugin's import raises, said in one line
        raise MetapromptError(f"{what} plugin {entry.name!r} ({entry.value}) could not be loaded: "
                              f"{type(err).__name__}: {' '.join(str(err).split())}") from None
