"""DAIC-WOZ (Gratch et al., LREC 2014, "The Distress Analysis Interview Corpus of human and computer
interviews"; AVEC 2017 depression sub-challenge splits), https://dcapswoz.ict.usc.edu/ — root holds
`{train,dev}_split_Depression_AVEC2017.csv` and one `<pid>_P/` folder per interview with
`<pid>_AUDIO.wav` (16 kHz, whole interview) and `<pid>_TRANSCRIPT.csv` (TAB-separated).

An interview becomes training examples as 10 s windows drawn at random over the participant's speech
(participant rows of the transcript, concatenated): 100 per depressed interview, 39 per other, so
train has 30·100 + 77·39 = 6003 and dev 12·100 + 23·39 = 2097 segments (the paper's counts). Windows may
overlap (many interviews have fewer than 100 disjoint ones) and are redrawn per run with
seed = (run seed, participant id). A segment is an `Utterance` whose `extra["pieces"]` lists the
(start, end) seconds in the interview wav that make up its 10 s; `downstream_tasks.audio.load_audio(segments=...)` reads them.

Transcript repairs follow adbailey1/daic_woz_process `config_files/config_process.py`: drop the chatter
before Ellie's first line, cut the two interruptions, shift four misaligned transcripts, drop sync
markers. 409's PHQ8_Binary (0 despite score 10) is kept as distributed: relabelling breaks the counts.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from care_core.constants import SAMPLE_RATE
from downstream_tasks.protocol import register_fold_rule
from .base import CorpusError, Utterance, find_audio, report, visible

CORPUS = "daicwoz"
SPLIT_FILES = {"train": "train_split_Depression_AVEC2017.csv", "dev": "dev_split_Depression_AVEC2017.csv"}
SPLIT_COLUMNS = ("Participant_ID", "PHQ8_Binary", "PHQ8_Score", "Gender")
TRANSCRIPT_HEADER = ("start_time", "stop_time", "speaker", "value")
LABELS = {0: "not_depressed", 1: "depressed"}
PARTICIPANT_DIR_RE = re.compile(r"^(\d+)_P$")

#: Seconds to add to transcript times to land on the audio (transcript → audio misalignment).
TRANSCRIPT_OFFSETS: Mapping[int, float] = {318: 34.319917, 321: 3.8379167, 341: 6.1892, 362: 16.8582}
#: Stretches (audio seconds) where someone interrupts the interview; participant speech there is cut.
INTERRUPTIONS: Mapping[int, Tuple[float, float]] = {373: (395.0, 428.0), 444: (286.0, 387.0)}
#: Rows that mark synchronisation, not speech (compared lower-cased, stripped).
SYNC_MARKERS = frozenset({"<sync>", "<synch>", "[sync]", "[synch]", "[syncing]", "[synching]"})


@dataclass(frozen=True)
class DaicWozConfig:
    """Segmenting protocol (the paper's): window length and windows per interview by class."""

    segment_seconds: float = 10.0
    segments_depressed: int = 100
    segments_other: int = 39
    sample_rate: int = SAMPLE_RATE

    def n_segments(self, depressed: bool) -> int:
        return self.segments_depressed if depressed else self.segments_other


@dataclass
class Interview:
    """One participant: label facts and the participant-speech intervals (audio seconds, merged)."""

    pid: int
    split: str
    phq8_binary: int
    phq8_score: Optional[int]
    gender: Optional[int]
    audio: Path
    transcript: Path
    duration: float
    intervals: List[Tuple[float, float]]

    @property
    def speech_seconds(self) -> float:
        return sum(e - s for s, e in self.intervals)




def _int_cell(path: Path, line: int, column: str, cell: Optional[str], required: bool) -> Optional[int]:
    cell = (cell or "").strip()
    if not cell:
        if required:
            raise CorpusError(path, f"line {line}: empty {column}")
        return None
    try:
        value = float(cell)
    except ValueError as exc:
        raise CorpusError(path, f"line {line}: {column} is not a number: {cell!r}") from exc
    if not value.is_integer():
        raise CorpusError(path, f"line {line}: {column} is not an integer: {cell!r}")
    return int(value)


def read_split_csv(path: Path) -> List[dict]:
    """Rows of an AVEC 2017 train/dev split file: pid, PHQ8_Binary (0/1), PHQ8_Score, Gender."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        missing = [c for c in SPLIT_COLUMNS if c not in header]
        if missing:
            raise CorpusError(path, f"missing columns {missing}; header is {header}")
        rows, seen = [], set()
        for row in reader:
            line = reader.line_num
            if all(not (v or "").strip() for k, v in row.items() if k is not None):
                continue
            pid = _int_cell(path, line, "Participant_ID", row["Participant_ID"], True)
            binary = _int_cell(path, line, "PHQ8_Binary", row["PHQ8_Binary"], True)
            if binary not in LABELS:
                raise CorpusError(path, f"line {line}: PHQ8_Binary must be 0 or 1, got {binary}")
            if pid in seen:
                raise CorpusError(path, f"line {line}: participant {pid} listed twice")
            seen.add(pid)
            rows.append(dict(pid=pid, phq8_binary=binary,
                             phq8_score=_int_cell(path, line, "PHQ8_Score", row["PHQ8_Score"], False),
                             gender=_int_cell(path, line, "Gender", row["Gender"], False)))
    return rows


def read_transcript(path: Path) -> List[Tuple[float, float, str, str, int]]:
    """Rows (start, stop, speaker, value, line) of a `<pid>_TRANSCRIPT.csv`; blank lines skipped."""
    path = Path(path)
    rows = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        lines = f.read().splitlines()
    if not lines or tuple(c.strip() for c in lines[0].split("\t")[:4]) != TRANSCRIPT_HEADER:
        raise CorpusError(path, f"expected TAB-separated header {'/'.join(TRANSCRIPT_HEADER)}, "
                                f"got {lines[0][:80] if lines else '(empty file)'!r}")
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < 3:
            raise CorpusError(path, f"line {lineno}: expected start, stop, speaker, value separated by TABs")
        try:
            start, stop = float(cells[0]), float(cells[1])
        except ValueError as exc:
            raise CorpusError(path, f"line {lineno}: non-numeric time in {line!r}") from exc
        speaker = cells[2].strip()
        if speaker.lower() not in ("ellie", "participant"):
            raise CorpusError(path, f"line {lineno}: unknown speaker {speaker!r}")
        rows.append((start, stop, speaker.lower(), "\t".join(cells[3:]).strip(), lineno))
    return rows


def _merge(intervals: List[Tuple[float, float]]) -> List[Tuple[float, float]]:
    merged: List[List[float]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def participant_intervals(pid: int, rows: Sequence[Tuple[float, float, str, str, int]], duration: float,
                          transcript: Path, *, strict: bool = False,
                          skipped: Optional[list] = None) -> List[Tuple[float, float]]:
    """Participant speech in audio seconds after the known repairs, merged and clipped to the audio.

    Interviews without Ellie rows (451, 458, 480) keep every participant row: there is no line to
    anchor the start on. Rows ending before they start are skipped and reported.
    """
    offset = TRANSCRIPT_OFFSETS.get(pid, 0.0)
    ellie = [r[0] for r in rows if r[2] == "ellie" and r[3].lower() not in SYNC_MARKERS]
    first_ellie = min(ellie) if ellie else -math.inf
    out = []
    for start, stop, speaker, value, lineno in rows:
        if speaker != "participant" or value.lower() in SYNC_MARKERS or start < first_ellie:
            continue
        if stop < start:
            report(CorpusError(transcript, f"line {lineno}: stop {stop} before start {start}; row skipped"),
                    strict, skipped)
            continue
        start, stop = start + offset, stop + offset
        pieces = [(start, stop)]
        if pid in INTERRUPTIONS:
            a, b = INTERRUPTIONS[pid]
            pieces = [(s, min(e, a)) for s, e in pieces if s < a] + [(max(s, b), e) for s, e in pieces if e > b]
        out += [(max(s, 0.0), min(e, duration)) for s, e in pieces]
    return [(s, e) for s, e in _merge(out) if e > s]


def _find_unique(root: Path, name: str) -> Path:
    hits = [p for p in sorted(root.rglob(name))
            if p.is_file() and visible(root, p)]
    if not hits:
        raise CorpusError(root, f"no {name} under the DAIC-WOZ root")
    if len(hits) > 1:
        raise CorpusError(root, f"{len(hits)} copies of {name}: {', '.join(map(str, hits))}")
    return hits[0]


def _participant_dirs(root: Path) -> Dict[int, Path]:
    dirs: Dict[int, Path] = {}
    for p in sorted(root.rglob("*_P")):
        m = PARTICIPANT_DIR_RE.match(p.name)
        if not m or not p.is_dir() or not visible(root, p):
            continue
        pid = int(m.group(1))
        if pid in dirs:
            raise CorpusError(p, f"second folder for participant {pid} (first: {dirs[pid]})")
        dirs[pid] = p
    return dirs


def read_interviews(root: Path | str, *, splits: Sequence[str] = ("train", "dev"), strict: bool = False,
                    skipped: Optional[list] = None) -> List[Interview]:
    """Every listed participant with audio, labels and repaired participant-speech intervals.

    A participant listed in a split file but without its folder, readable audio or transcript is
    skipped and reported (or raises under `strict`); so is one with no participant speech left after
    the repairs. A malformed transcript or split file always raises: it is damage, not absence.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "DAIC-WOZ root is not a directory")
    dirs = _participant_dirs(root)
    out: List[Interview] = []
    for split in splits:
        if split not in SPLIT_FILES:
            raise ValueError(f"unknown DAIC-WOZ split {split!r}; expected one of {sorted(SPLIT_FILES)}")
        split_csv = _find_unique(root, SPLIT_FILES[split])
        for row in read_split_csv(split_csv):
            pid = row["pid"]
            folder = dirs.get(pid)
            if folder is None:
                report(CorpusError(root, f"no {pid}_P/ folder for participant {pid} of {split_csv.name}; "
                                          "skipped"), strict, skipped)
                continue
            audio = find_audio(folder / f"{pid}_AUDIO.wav")
            transcript = folder / f"{pid}_TRANSCRIPT.csv"
            lost = ([f"{pid}_AUDIO.wav"] if audio is None else []) + ([] if transcript.is_file() else [transcript.name])
            if lost:
                report(CorpusError(folder, f"missing {', '.join(lost)}; participant {pid} skipped"),
                        strict, skipped)
                continue
            try:
                info = sf.info(str(audio))
            except Exception as exc:  # libsndfile raises its own error types
                report(CorpusError(audio, f"unreadable audio ({exc}); participant {pid} skipped"), strict, skipped)
                continue
            duration = info.frames / float(info.samplerate)
            intervals = participant_intervals(pid, read_transcript(transcript), duration, transcript,
                                              strict=strict, skipped=skipped)
            if not intervals:
                report(CorpusError(transcript, f"no participant speech left for {pid}; skipped"),
                        strict, skipped)
                continue
            out.append(Interview(pid=pid, split=split, phq8_binary=row["phq8_binary"],
                                 phq8_score=row["phq8_score"], gender=row["gender"], audio=audio,
                                 transcript=transcript, duration=duration, intervals=intervals))
    return out


def draw_windows(intervals: Sequence[Tuple[float, float]], n: int, rng: np.random.Generator,
                 cfg: DaicWozConfig = DaicWozConfig()) -> List[List[Tuple[float, float]]]:
    """`n` random windows of `cfg.segment_seconds` over the concatenated intervals.

    Positions are drawn in whole samples, uniformly over every start that keeps the window inside the
    concatenation, so windows may overlap. Each window is returned as the interval pieces it covers
    (audio seconds). Speech shorter than one window gives `n` copies of all of it (padded later).
    """
    sr = cfg.sample_rate
    spans = [(int(round(s * sr)), int(round(e * sr))) for s, e in intervals]
    spans = [(s, e) for s, e in spans if e > s]
    lengths = np.array([e - s for s, e in spans], dtype=np.int64)
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    width = int(round(cfg.segment_seconds * sr))
    if total == 0:
        raise ValueError("no speech to draw windows from")
    windows = []
    for _ in range(n):
        first = int(rng.integers(0, total - width + 1)) if total > width else 0
        last = min(first + width, total)
        pieces = []
        i = int(np.searchsorted(ends, first, side="right"))
        pos = first
        while pos < last:
            span_start = int(ends[i] - lengths[i])
            s = spans[i][0] + (pos - span_start)
            take = min(last, int(ends[i])) - pos
            pieces.append((s / sr, (s + take) / sr))
            pos += take
            i += 1
        windows.append(pieces)
    return windows


def segment_interviews(interviews: Sequence[Interview], seeds: Sequence[int] = (0,),
                       cfg: DaicWozConfig = DaicWozConfig()) -> List[Utterance]:
    """Draw each interview's windows once per run seed; the generator is seeded by (seed, pid)."""
    out: List[Utterance] = []
    for seed in seeds:
        for iv in interviews:
            rng = np.random.default_rng([int(seed), iv.pid])
            label = LABELS[iv.phq8_binary]
            for k, pieces in enumerate(draw_windows(iv.intervals, cfg.n_segments(iv.phq8_binary == 1), rng, cfg)):
                out.append(Utterance(
                    id=f"{CORPUS}-{iv.pid}-r{seed}-{k:03d}", path=iv.audio, speaker=str(iv.pid), label=label,
                    corpus=CORPUS,
                    extra=dict(split=iv.split, run=int(seed), segment=k, pieces=pieces,
                               phq8_score=iv.phq8_score, gender=iv.gender),
                ))
    return out


def parse_daicwoz(root: Path | str, *, seeds: Sequence[int] = (0,), splits: Sequence[str] = ("train", "dev"),
                  cfg: DaicWozConfig = DaicWozConfig(), strict: bool = False,
                  skipped: Optional[list] = None) -> List[Utterance]:
    """10 s segments of the AVEC 2017 train and dev interviews, drawn for each run seed in `seeds`."""
    return segment_interviews(read_interviews(root, splits=splits, strict=strict, skipped=skipped), seeds, cfg)


@register_fold_rule("daicwoz_dev")
def daicwoz_dev(utterances: Sequence[Utterance], fold: int, *, run: Optional[int] = None, **_) -> List[str]:
    """Train on train, validate (and report) on dev; only segments drawn for one run take part.

    `run` names the seed whose segments are used; without it, fold k uses the k-th smallest seed
    present, so a task with one fold per drawn seed gets one redraw per fold.
    """
    runs = sorted({u.extra["run"] for u in utterances})
    if run is None:
        if fold >= len(runs):
            raise ValueError(f"daicwoz_dev: fold {fold + 1} needs {fold + 1} drawn runs, found {runs}")
        run = runs[fold]
    elif run not in runs:
        raise ValueError(f"daicwoz_dev: no segments drawn for run {run} (drawn: {runs})")
    return [u.extra["split"] if u.extra["run"] == run else "-" for u in utterances]

