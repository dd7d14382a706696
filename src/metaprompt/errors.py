"""The one exception type the command line turns into a one-line message (no traceback)."""


class MetapromptError(Exception):
    """A user-facing error: the message names the thing that is wrong and what was expected."""
