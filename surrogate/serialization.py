"""Text format of a serialized surrogate: one JSON header line plus LightGBM model texts.

Layout::

    {"format": "apfp-nas-surrogate", "format_version": 1, ..., "boosters": [...]}
    #apfp-booster base 0
    <LightGBM model text of booster 0, as Booster.model_to_string() writes it>
    #apfp-booster base 1
    ...
    #apfp-booster residual 0
    ...

The header is a single line of JSON. Its ``boosters`` list names, in order, the
role, index and SHA-256 of every model text that follows, so a truncated or edited
file is rejected instead of silently predicting something else. The text is parsed
with :func:`json.loads` and LightGBM's own model-text parser only: no pickle, no
``eval``. What the header means beyond ``format`` and ``boosters`` is up to the
predictor that writes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping, Sequence

import lightgbm as lgb

from nas.errors import SurrogateError

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "dump_text", "parse_text"]

FORMAT_NAME = "apfp-nas-surrogate"
FORMAT_VERSION = 1

_SEPARATOR = re.compile(r"^#apfp-booster ([a-z_]+) (\d+)\n", re.MULTILINE)


def _digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _body(booster: lgb.Booster) -> str:
    text = booster.model_to_string()
    return text if text.endswith("\n") else text + "\n"


def dump_text(header: Mapping[str, Any], boosters: Sequence[tuple[str, lgb.Booster]]) -> str:
    """Return the surrogate text for ``header`` and ``(role, booster)`` pairs, in order.

    ``header`` must be JSON-serializable and must not use the keys ``format``,
    ``format_version`` or ``boosters``, which this function fills in.
    """
    reserved = {"format", "format_version", "boosters"} & set(header)
    if reserved:
        raise SurrogateError(f"header keys {sorted(reserved)} are reserved for the text format")
    counters: dict[str, int] = {}
    entries, chunks = [], []
    for role, booster in boosters:
        index = counters.get(role, 0)
        counters[role] = index + 1
        body = _body(booster)
        entries.append({"role": role, "index": index, "sha256": _digest(body)})
        chunks.append(f"#apfp-booster {role} {index}\n{body}")
    full_header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **header, "boosters": entries}
    return json.dumps(full_header, allow_nan=False) + "\n" + "".join(chunks)


def parse_text(text: str) -> tuple[dict[str, Any], list[tuple[str, lgb.Booster]]]:
    """Parse :func:`dump_text` output into the header and ``(role, booster)`` pairs.

    Raises :class:`nas.errors.SurrogateError` when the text is not a surrogate of this
    format and version, or when a model text is missing, altered or unreadable.
    """
    if not isinstance(text, str):
        raise SurrogateError(f"surrogate text must be str, got {type(text).__name__}")
    first, _, rest = text.partition("\n")
    try:
        header = json.loads(first)
    except json.JSONDecodeError as error:
        raise SurrogateError(
            f"surrogate text does not start with a JSON header line ({error}); "
            f"it starts with {first[:80]!r}"
        ) from error
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise SurrogateError(f"surrogate header format is {found!r}; expected {FORMAT_NAME!r}")
    if header.get("format_version") != FORMAT_VERSION:
        raise SurrogateError(
            f"surrogate text format version is {header.get('format_version')!r}; this code reads "
            f"version {FORMAT_VERSION}; refit the surrogate or use a matching APFP-NAS release"
        )
    entries = header.get("boosters")
    if not isinstance(entries, list):
        raise SurrogateError("surrogate header has no 'boosters' list")
    pieces = _SEPARATOR.split(rest)
    if pieces[0].strip():
        raise SurrogateError(f"unexpected text between the header and the first booster: {pieces[0][:80]!r}")
    found = [(pieces[i], int(pieces[i + 1]), pieces[i + 2]) for i in range(1, len(pieces), 3)]
    if len(found) != len(entries):
        raise SurrogateError(
            f"surrogate header lists {len(entries)} boosters but the text contains {len(found)}; "
            "the text is truncated or corrupt"
        )
    boosters = []
    for entry, (role, index, body) in zip(entries, found):
        if not isinstance(entry, dict) or (entry.get("role"), entry.get("index")) != (role, index):
            raise SurrogateError(f"booster {role} {index} does not match its header entry {entry!r}")
        if _digest(body) != entry.get("sha256"):
            raise SurrogateError(f"booster {role} {index} fails its SHA-256 check; the text was altered")
        try:
            boosters.append((role, lgb.Booster(model_str=body)))
        except lgb.basic.LightGBMError as error:
            raise SurrogateError(f"booster {role} {index} is not a readable LightGBM model: {error}") from error
    return header, boosters
