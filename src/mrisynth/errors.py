"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a one-line message and exit code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input or environment that the user can fix; the message says what is wrong and how to fix it."""
