"""Work on many files: errors that belong to one file, their one-line form, and a loop
that records them and goes on (a progress bar; nothing already done is lost)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tqdm.auto import tqdm

from deid_client.io.images import ImageReadError

__all__ = ["FileReport", "each_file", "USER_ERRORS", "first_line"]

T = TypeVar("T")
R = TypeVar("R")

#: Errors that belong to one file and must not stop the others.
USER_ERRORS = (ImageReadError, ValueError, OSError)


def first_line(exc: BaseException) -> str:
    r"""An error as one line for a console or a manifest: its message's first line.

    >>> first_line(ValueError("bad photo\nmore detail"))
    'bad photo'
    """
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@dataclass
class FileReport(Generic[T, R]):
    """What a run over files did: results of the good items, one-line errors of the others."""

    results: list[tuple[T, R]] = field(default_factory=list)
    errors: list[tuple[T, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def each_file(
    items: Iterable[T],
    fn: Callable[[T], R],
    *,
    desc: str = "processing",
    progress: bool = True,
) -> FileReport[T, R]:
    """Apply ``fn`` to every item; a user error on one item is recorded, not raised.

    Programming errors (``TypeError``, ``KeyError``...) still propagate: hiding
    them would turn bugs into silently skipped patients.
    """
    items = list(items)
    report: FileReport[T, R] = FileReport()
    for item in tqdm(items, desc=desc, unit="file", disable=not progress, leave=False):
        try:
            report.results.append((item, fn(item)))
        except USER_ERRORS as exc:
            report.errors.append((item, str(exc)))
    return report
