"""The one exception type that the command-line entry points turn into a short message."""


class UserInputError(ValueError):
    """Bad input or configuration, found before any work is done.

    The message names the file or setting at fault and how to fix it; entry points print it without a
    traceback and exit with status 2.
    """


class DiskFullError(UserInputError):
    """The disk filled up while a run was working. What the run wrote is kept, since it resumes from it; the
    message says what to free and how to resume."""
