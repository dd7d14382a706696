"""The exception types the command line turns into a one-line message (no traceback)."""


class MetapromptError(Exception):
    """A user-facing error: the message names the thing that is wrong and what was expected."""


class PeerError(MetapromptError):
    """Raised on every process of a run but the one that met an error, so that none is left waiting in a
    collective call; the command line prints it on rank 0 only (the failing process prints its own error)."""
