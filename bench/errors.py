"""The one error type the CLI turns into a one-line message and exit code 2."""


class UsageError(Exception):
    """Bad input from the user: a name, a path, a file. The message says what and how to fix it."""
