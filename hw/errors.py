"""The error type the command line reports as one line (no traceback).

Anything the user can fix (a bad configuration value, an unknown name, a missing tool, a
corrupt download) raises a subclass of :class:`RpaccelError` whose message says what is
wrong and, where it helps, what to do.
"""


class RpaccelError(Exception):
    """An error the user can act on; its message is complete on one line."""
