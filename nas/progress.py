"""Progress bars for long loops (epochs, many subnets), switched off with one flag.

Bars go to stderr through tqdm and vanish when done (``leave=False``), so they never
mix with log records. Messages that must survive belong in :mod:`logging`.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(
    iterable: Iterable[T],
    *,
    desc: str,
    enabled: bool = True,
    total: int | None = None,
    unit: str = "it",
) -> Iterator[T] | tqdm:
    """Wrap ``iterable`` in a tqdm bar labelled ``desc``.

    Without a bar (``enabled`` false, or stderr not a terminal, as in logs and CI) the
    iterable is returned as an iterator.

    The returned object is iterated like ``iterable``. When enabled it is a tqdm bar, so
    the caller may call ``set_postfix`` on it; :func:`set_postfix` does so safely either way.
    """
    if not enabled or not sys.stderr.isatty():
        return iter(iterable)
    return tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)


def set_postfix(bar: object, **values: float) -> None:
    """Show ``values`` next to ``bar`` if it is a tqdm bar; do nothing otherwise."""
    if isinstance(bar, tqdm):
        bar.set_postfix({key: f"{value:.4g}" for key, value in values.items()}, refresh=False)
