"""User-facing errors: the CLI prints these as one line and exits non-zero, never a traceback."""


class QbertError(Exception):
    """A problem with the user's input or environment, with a message that names the fix."""
