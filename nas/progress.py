"""Progress bars for long loops (epochs, many subnets), switched off with one flag.

Bars go to stderr through tqdm and vanish when done (``leave=False``), so they never
mix with log records. Messages that must survive belong in :mod:`logging`. When
stderr is not a terminal (output sent to a file or a CI log), a long loop logs its
progress at INFO each quarter instead, so a slow run can be told from a hung one.
"""

from __future__ import annotations

import logging
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Shortest loop whose progress is logged when stderr is not a terminal.
MIN_LOGGED_TOTAL = 20


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    enabled: bool = True,
    total: int | None = None,
    unit: str = "it",
) -> Iterator[T] | tqdm:
    """Wrap ``iterable`` in a tqdm bar labelled ``desc``.

    With ``enabled`` false the iterable is returned as an iterator. When stderr is not a
    terminal (logs and CI) the iterator logs ``desc: k/n`` at INFO after each quarter of
    a loop whose length ``n`` is known (``total``, else ``len(iterable)``) and at least
    :data:`MIN_LOGGED_TOTAL`; shorter loops, such as epochs, log their own steps.

    The returned object is iterated like ``iterable``. When enabled it is a tqdm bar, so
    the caller may call ``set_postfix`` on it; :func:`set_postfix` does so safely either way.
    """
    if not enabled:
        return iter(iterable)
    if not sys.stderr.isatty():
        return _logged(iterable, desc, total if total is not None else _length(iterable))
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)


def _length(iterable: Iterable[T]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _logged(iterable: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    logged = total is not None and total >= MIN_LOGGED_TOTAL
    marks = {round(total * quarter / 4) for quarter in (1, 2, 3, 4)} if logged else set()
    for count, item in enumerate(iterable, start=1):
        yield item
        if count in marks:
            logger.info("%s: %d/%d", desc, count, total)


def set_postfix(bar: object, **values: float) -> None:
    """Show ``values`` next to ``bar`` if it is a tqdm bar; do nothing otherwise."""
    if isinstance(bar, tqdm):
        bar.set_postfix({key: f"{value:.4g}" for key, value in values.items()}, refresh=False)
