"""One exception type for problems a user can fix; the CLI prints its message as one line and exits 1."""


class LicError(Exception):
    """A user-facing error: the message names the problem and, where there is one, the fix."""
