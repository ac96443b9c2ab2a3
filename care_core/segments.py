"""The one text form of audio segments, as stored in a manifest's ``segments`` cell.

``12.5-17.25;30-35``: (start, end) seconds, pieces joined by ``;`` (a DAIC-WOZ window spans several
participant turns). Empty means the whole file. Six decimals keep it exact to the microsecond.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

Segments = Optional[List[Tuple[float, float]]]


def _fmt(x: float) -> str:
    return f"{x:.6f}".rstrip("0").rstrip(".")


def segments_to_str(segments: Optional[Sequence[Tuple[float, float]]]) -> str:
    if not segments:
        return ""
    return ";".join(f"{_fmt(s)}-{_fmt(e)}" for s, e in segments)


def segments_from_str(text: str, where: str = "") -> Segments:
    """Parse a cell; `where` (file:line) prefixes the error so a bad cell names its place."""
    if not text:
        return None
    out = []
    for part in text.split(";"):
        s, sep, e = part.partition("-")
        try:
            if not sep:
                raise ValueError
            start, end = float(s), float(e)
        except ValueError:
            raise ValueError(f"{where}: bad segment {part!r} (expected start-end seconds)") from None
        if not end > start >= 0:
            raise ValueError(f"{where}: bad segment {part!r} (end must follow start, both >= 0)")
        out.append((start, end))
    return out
