"""User-facing errors. The CLI prints their message, never a traceback."""


class HdcError(Exception):
    """The command ran but could not finish: bad data, a broken model file. Exit code 1."""

    exit_code = 1


class UsageError(HdcError):
    """The command was called wrongly: a bad flag value, a missing file. Exit code 2."""

    exit_code = 2
