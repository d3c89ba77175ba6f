"""One exception type for problems a user can fix; the CLI prints its message as one line and exits 1."""


class LicError(Exception):
    """A user-facing error: the message names the problem and, where there is one, the fix."""


class LicWarning(UserWarning):
    """Something a user should know that does not stop the work; the CLI prints it as one line."""
