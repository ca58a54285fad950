"""The one exception a user sees: a sentence that says what was wrong, where, and what to do."""
from __future__ import annotations


class HarnessError(Exception):
    """Bad input or an impossible request. The command line prints it without a traceback and exits 2."""

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        return f"{text}\n  fix: {self.fix}" if self.fix else text
