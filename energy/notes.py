"""A report's note in both languages: the one form every energy note takes (reports, factors,
costs, the JSON and CSV renderings), so a page or a report shows the note in its own language
and no note exists in one language only.

The JSON keeps each English text where it always was (`notes`, `note`, `name`) and adds the
Chinese beside it (`notes_zh`, `note_zh`, `name_zh`): clients written for the English fields
keep working.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Note:
    zh: str
    en: str

    def __bool__(self) -> bool:
        return bool(self.en or self.zh)


NONE = Note("", "")


def join(notes: Iterable[Note]) -> Note:
    """The non-empty notes as one, each language with its own separator."""
    kept = [n for n in notes if n]
    return Note("；".join(n.zh for n in kept), "; ".join(n.en for n in kept))


def english(notes: Iterable[Note]) -> list[str]:
    return [n.en for n in notes]


def chinese(notes: Iterable[Note]) -> list[str]:
    return [n.zh for n in notes]
