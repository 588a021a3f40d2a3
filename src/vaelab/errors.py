"""One error type for everything a user can get wrong.

The CLI turns a `VaelabError` into a single line on stderr and exit code 2 (no traceback unless
``VAELAB_DEBUG=1``). The message says what was wrong and where; ``hint`` says what to do.
"""

from __future__ import annotations


class VaelabError(Exception):
    """Bad input or a state the user can fix. ``str(err)`` is one line: problem, then hint."""

    def __init__(self, message: str, hint: str | None = None):
        self.message = " ".join(str(message).split())
        self.hint = " ".join(hint.split()) if hint else None
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


def shell(*words: object) -> str:
    """A command line to paste into a shell: each word quoted when it needs it (run names with spaces, quotes)."""
    import shlex

    return " ".join(shlex.quote(str(w)) for w in words)


def fail(message: str, hint: str | None = None) -> VaelabError:
    """Build the error to raise: ``raise fail("...", "...")`` reads like a sentence."""
    return VaelabError(message, hint)
