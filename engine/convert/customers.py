"""Customer matching: the same customer key gets the same debtor number.

Behind a small interface so that a register that remembers across runs, or the
Asperion API itself, can take the place of the in-file matcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from engine.expr.filters import fold_name


@dataclass(frozen=True)
class Match:
    number: str
    known: bool  # True when the key was seen before (same debtor reused)
    flags: tuple[str, ...] = ()


class DebtorMatcher(Protocol):
    def match(self, key: str, proposed_number: str, name: str, ctx: dict | None = None) -> Match:
        """The debtor for ``key``; ``ctx`` is the record's template context (for creating one)."""

    def flush(self, before_delivery: bool = True) -> None:
        """Store what matching created, before the records that carry it are delivered."""


@dataclass
class InFileMatcher:
    """Within one run: the first record of a key decides its debtor number."""

    seen: dict[str, tuple[str, str]] = field(default_factory=dict)

    def flush(self, before_delivery: bool = True) -> None:
        pass  # nothing outlives the run

    def match(self, key: str, proposed_number: str, name: str, ctx: dict | None = None) -> Match:
        hit = self.seen.get(key)
        if hit is None:
            self.seen[key] = (proposed_number, fold_name(name))
            return Match(proposed_number, known=False)
        number, folded = hit
        flags: tuple[str, ...] = ()
        if folded and fold_name(name) != folded:
            flags = (f"e-mail shared with debtor {number} under another name: booked on {number}, nothing changed",)
        return Match(number, known=True, flags=flags)
