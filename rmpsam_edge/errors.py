"""User-facing errors: one line naming the problem and the fix; the CLI prints them without a traceback."""


class UserError(Exception):
    """A problem with the user's input (file, argument, environment). ``str(err)`` is the whole message."""

    exit_code = 2


def warn(message):
    """One warning line on stderr (the runtime's only logging channel besides errors)."""
    import sys
    sys.stderr.write("warning: %s\n" % message)
