"""IEMOCAP (Busso et al., 2008, "IEMOCAP: Interactive emotional dyadic motion capture database"),
https://sail.usc.edu/iemocap/ — layout as in `IEMOCAP_full_release/`.

Labels come from the consensus line of each block in `SessionN/dialog/EmoEvaluation/<dialog>.txt`
(top level only: the `Categorical/`, `Attribute/`, `Self-evaluation/` subfolders hold per-rater copies).
The speaker is the session plus the first letter of the utterance's last id field: the sixth character
of the id names the motion-capture wearer, not the speaker, so `Ses01F_impro01_M003` is the male
actor of session 1 (s3prl's emotion recipe gets this wrong).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from downstream_tasks.protocol import register_fold_rule
from .base import CorpusError, Utterance, find_audio, report, visible

CORPUS = "iemocap"
SESSIONS = (1, 2, 3, 4, 5)

#: Every consensus code the release uses (10,039 blocks); anything else is a surprise.
KNOWN_CODES = frozenset({"xxx", "fru", "neu", "ang", "sad", "exc", "hap", "sur", "fea", "oth", "dis"})

UTT_RE = re.compile(r"^Ses0([1-5])[FM]_(?:impro0[1-8][ab]?|script0[1-3]_[1-3][ab]?)_([FM])(?:\d{3}|XX\d)$")
# `[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]`
HEADER_RE = re.compile(
    r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\]\s*$"
)


def speaker_of(utt_id: str) -> str:
    """`Ses01F_impro01_M003` -> `Ses01M`: session plus the sex letter of the last id field."""
    m = UTT_RE.match(utt_id)
    if not m:
        raise ValueError(f"not an IEMOCAP utterance id: {utt_id!r}")
    return f"Ses0{m.group(1)}{m.group(2)}"




def parse_label_file(path: Path) -> List[dict]:
    """Consensus blocks of one `EmoEvaluation/<dialog>.txt`: id, code, start/end seconds, V/A/D.

    Only lines starting with `[` carry the consensus; rater lines (`C-E2:`, `A-E3:`) and the `%`
    header are skipped. A `[` line that does not parse, an unknown code or a bad id raises.
    """
    path = Path(path)
    rows = []
    # Rater comments may hold stray non-UTF-8 bytes; only the ASCII `[` lines matter.
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.startswith("["):
            continue
        m = HEADER_RE.match(line.strip())
        if not m:
            raise CorpusError(path, f"line {lineno}: malformed block header {line.strip()!r}")
        start, end, utt, code, v, a, d = m.groups()
        if not UTT_RE.match(utt):
            raise CorpusError(path, f"line {lineno}: unexpected utterance id {utt!r}")
        if code not in KNOWN_CODES:
            raise CorpusError(path, f"line {lineno}: unknown emotion code {code!r} for {utt}")
        rows.append(
            dict(id=utt, code=code, start=float(start), end=float(end),
                 valence=float(v), arousal=float(a), dominance=float(d), lineno=lineno)
        )
    return rows


def _find_release_root(root: Path) -> Path:
    """The folder holding `Session1`..`Session5` (the root itself or e.g. `IEMOCAP_full_release/`)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "IEMOCAP root is not a directory")
    if (root / "Session1").is_dir():
        return root
    candidates = sorted(p.parent for p in root.rglob("Session1") if p.is_dir()
                        and visible(root, p))
    if not candidates:
        raise CorpusError(root, "no Session1 folder found (expected IEMOCAP_full_release/Session1..5)")
    return candidates[0]


def parse_iemocap(root: Path | str, *, sessions: Sequence[int] = SESSIONS, strict: bool = False,
                  skipped: Optional[list] = None) -> List[Utterance]:
    """Read IEMOCAP's label files and pair each block with its sentence wav.

    Labels are the raw consensus codes (all 11, `xxx` included): the task specs in
    `downstream_tasks.protocol` map them to IEMOCAP-4 / IEMOCAP-6 and drop the rest. A block whose
    wav is missing is skipped (appended to `skipped` as a `CorpusError`) unless `strict`, where it
    raises. Every requested session must have label files: a missing session means a broken copy.
    """
    base = _find_release_root(Path(root))
    out: List[Utterance] = []
    seen: Dict[str, Path] = {}
    for session in sessions:
        sdir = base / f"Session{session}"
        label_dir = sdir / "dialog" / "EmoEvaluation"
        if not label_dir.is_dir():
            raise CorpusError(label_dir, f"missing label folder for Session{session}")
        label_files = [p for p in sorted(label_dir.glob("*.txt")) if not p.name.startswith(".")]
        if not label_files:
            raise CorpusError(label_dir, f"no label files for Session{session}")
        for lf in label_files:
            for row in parse_label_file(lf):
                utt = row["id"]
                if int(utt[4]) != session:
                    raise CorpusError(lf, f"line {row['lineno']}: {utt} listed under Session{session}")
                if utt in seen:
                    raise CorpusError(lf, f"line {row['lineno']}: {utt} already labelled in {seen[utt]}")
                seen[utt] = lf
                label = row["code"]
                dialog = utt.rsplit("_", 1)[0]
                named = sdir / "sentences" / "wav" / dialog / f"{utt}.wav"
                wav = find_audio(named)
                if wav is None:
                    report(CorpusError(named, f"audio missing for {utt} (labelled in {lf.name} line "
                                             f"{row['lineno']}); skipped"), strict, skipped)
                    continue
                out.append(Utterance(
                    id=f"{CORPUS}-{utt}", path=wav, speaker=speaker_of(utt), label=label, corpus=CORPUS,
                    extra=dict(session=session, dialog=dialog, code=row["code"], dialog_start=row["start"],
                               dialog_end=row["end"], valence=row["valence"], arousal=row["arousal"],
                               dominance=row["dominance"]),
                ))
    return out


def dev_session(test_session: int) -> int:
    """Held-out validation session for a test session: the next one, cyclically (5 -> 1).

    The paper's validation and test sizes (both about 1102) only add up as a whole held-out session;
    s3prl instead takes a random 20 % of train (speaker-overlapping), which we do not copy.
    """
    return test_session % len(SESSIONS) + 1


@register_fold_rule("iemocap_session")
def iemocap_session(utterances: Sequence[Utterance], fold: int, **_) -> List[str]:
    """Leave one session out: fold k (0-based) tests Session k+1 and validates on `dev_session(k+1)`."""
    test = SESSIONS[fold]
    dev = dev_session(test)
    return ["test" if u.extra["session"] == test else "dev" if u.extra["session"] == dev else "train"
            for u in utterances]
