"""MELD (Poria et al., ACL 2019, "MELD: A Multimodal Multi-Party Dataset for Emotion Recognition in
Conversations"), https://affective-meld.github.io/ — the `MELD.Raw.tar.gz` release, unpacked.

Rows come from `{train,dev,test}_sent_emo.csv` wherever they sit under the root; each row names its clip
`dia{Dialogue_ID}_utt{Utterance_ID}.mp4` in the split's clip folder. Clip names are built from rows, never
from a folder listing, because the folders hold unlabelled extras (`final_videos_test…`, dev `dia66_utt9`).
Clips are AAC in mp4 (6-channel or stereo): `extract_meld_audio` decodes them with PyAV, whose wheels
carry FFmpeg's libraries, so no system `ffmpeg` is needed.
"""

from __future__ import annotations

import csv
import io
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Sequence

import soundfile as sf

from care_core import atomic
from care_core.audio import SAMPLE_RATE, AudioError, read_mono
from downstream_tasks.protocol import register_fold_rule
from .base import CorpusError, Utterance, find_audio, iter_files, report, visible

CORPUS = "meld"
SPLITS = ("train", "dev", "test")
CLASSES = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS = ("neutral", "positive", "negative")
CSV_NAMES = {s: f"{s}_sent_emo.csv" for s in SPLITS}
CLIP_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID")

#: Clips known to be unusable in the public release; dropping them gives the paper's 9988 / 1108 / 2610.
#: train dia125_utt3 is corrupt (declare-lab/MELD issues 39, 52); dev dia110_utt7 is missing (22, 27).
KNOWN_BAD = {("train", "dia125_utt3"): "corrupt clip (declare-lab/MELD issues 39, 52)",
             ("dev", "dia110_utt7"): "clip missing from the release (declare-lab/MELD issues 22, 27)"}

#: Parallel decoding threads for `extract_meld_audio` (13.7k clips take long one at a time).
DECODE_WORKERS = 4


def _find_unique(root: Path, name: str, want_dir: bool) -> Path:
    hits = [p for p in (iter_dirs(root, name) if want_dir else iter_files(root, name))]
    if not hits:
        kind = "folder" if want_dir else "file"
        raise CorpusError(root, f"no {kind} named {name!r} anywhere under the MELD root")
    if len(hits) > 1:
        # Copies of the CSVs (e.g. declare-lab/MELD `data/MELD/`) are fine if they hold the same rows;
        # line endings or quoting may differ between copies.
        if not want_dir and len({_row_key(h) for h in hits}) == 1:
            return hits[0]
        raise CorpusError(root, f"{len(hits)} different {name!r} found: {', '.join(map(str, hits))}")
    return hits[0]


def _row_key(path: Path) -> tuple:
    return tuple((r["Dialogue_ID"].strip(), r["Utterance_ID"].strip(), r["Emotion"].strip(), r["Utterance"])
                 for r in read_meld_csv(path))


def iter_dirs(root: Path, name: str):
    """Folders called `name` under `root`, skipping hidden path parts."""
    root = Path(root)
    for p in sorted(root.rglob(name)):
        if p.is_dir() and visible(root, p):
            yield p


def read_meld_csv(path: Path) -> List[dict]:
    """Rows of one `*_sent_emo.csv` (UTF-8, CRLF, quoted fields with commas and newlines inside)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise CorpusError(path, f"missing columns {missing}; header is {header}")
            rows = []
            for row in reader:
                if None in row:  # more cells than header names
                    raise CorpusError(path, f"line {reader.line_num}: more fields than the header has")
                row["_line"] = reader.line_num
                rows.append(row)
    except UnicodeDecodeError as exc:
        raise CorpusError(path, f"not UTF-8 ({exc})") from exc
    except csv.Error as exc:
        raise CorpusError(path, f"malformed CSV: {exc}") from exc
    return rows


def parse_meld(root: Path | str, *, splits: Sequence[str] = SPLITS, strict: bool = False,
               skipped: Optional[list] = None) -> List[Utterance]:
    """Labelled MELD clips of the official splits; `path` is the mp4 clip (see `extract_meld_audio`).

    Rows whose clip is missing or listed in `KNOWN_BAD` are skipped and reported (`skipped` receives
    `CorpusError`s), or raise under `strict`. Unknown emotions, non-integer ids and duplicate rows raise.
    The speaker is the character name: MELD's protocol is not speaker-independent.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "MELD root is not a directory")
    out: List[Utterance] = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown MELD split {split!r}")
        csv_path = _find_unique(root, CSV_NAMES[split], want_dir=False)
        clip_dir = _find_unique(root, CLIP_DIRS[split], want_dir=True)
        seen = set()
        for row in read_meld_csv(csv_path):
            where = f"line {row['_line']}"
            emotion = row["Emotion"].strip().lower()
            if emotion not in CLASSES:
                raise CorpusError(csv_path, f"{where}: unknown emotion {row['Emotion']!r}")
            sentiment = row["Sentiment"].strip().lower()
            if sentiment not in SENTIMENTS:
                raise CorpusError(csv_path, f"{where}: unknown sentiment {row['Sentiment']!r}")
            try:
                dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
            except ValueError as exc:
                raise CorpusError(csv_path, f"{where}: non-integer Dialogue_ID/Utterance_ID") from exc
            name = f"dia{dia}_utt{utt}"
            if name in seen:
                raise CorpusError(csv_path, f"{where}: duplicate row for {name}")
            seen.add(name)
            clip = clip_dir / f"{name}.mp4"
            if (split, name) in KNOWN_BAD:
                report(CorpusError(clip, f"{split} {name}: {KNOWN_BAD[(split, name)]}; skipped"),
                        strict=False, skipped=skipped)
                continue
            found = find_audio(clip)  # dia0_utt0.MP4 too; a broken link is named by the decoder
            if found is None:
                report(CorpusError(clip, f"clip missing for {split} {name} ({csv_path.name} {where}); "
                                          "skipped"), strict, skipped)
                continue
            clip = found
            out.append(Utterance(
                id=f"{CORPUS}-{split}-{name}", path=clip, speaker=row["Speaker"].strip(), label=emotion,
                corpus=CORPUS,
                extra=dict(split=split, dialogue=dia, utterance=utt, sentiment=sentiment,
                           text=row["Utterance"], season=row.get("Season"), episode=row.get("Episode"),
                           start_time=row.get("StartTime"), end_time=row.get("EndTime")),
            ))
    return out


@register_fold_rule("meld_official")
def meld_official(utterances: Sequence[Utterance], fold: int, **_) -> List[str]:
    """The single official split (`train` / `dev` / `test` as distributed), the same for every seed."""
    return [u.extra["split"] for u in utterances]


def _convert(clip: Path, target: Path) -> Optional[str]:
    """Decode one clip to 16 kHz mono PCM-16 wav at `target`; None on success, else the reason.

    Channels are averaged (MELD has 6-channel and stereo AAC); the wav is written atomically, so a
    killed conversion never leaves a truncated file for the resume to trust."""
    if target.is_file():
        return None
    try:
        wav, _, _ = read_mono(clip, SAMPLE_RATE)
    except AudioError as err:
        return err.problem
    buf = io.BytesIO()
    sf.write(buf, wav.numpy(), SAMPLE_RATE, format="WAV", subtype="PCM_16")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(target, buf.getvalue())
    return None


def extract_meld_audio(utterances: Sequence[Utterance], out_dir: Path | str, *, strict: bool = False,
                       skipped: Optional[list] = None, workers: int = DECODE_WORKERS,
                       progress: bool = True) -> List[Utterance]:
    """Convert each clip to 16 kHz mono wav under `out_dir/<split>/<dia_utt>.wav`; return updated records.

    Existing outputs are reused (so an interrupted run resumes). Clips that do not decode (corrupt)
    are skipped and reported, or raise under `strict`. Decoding runs in `workers` threads (PyAV
    releases the GIL while it decodes) behind a progress bar; results keep the input order.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    targets = [out_dir / u.extra["split"] / f"{Path(u.path).stem}.wav" for u in utterances]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = list(tqdm(pool.map(_convert, [Path(u.path) for u in utterances], targets),
                            total=len(targets), desc="decoding MELD clips", disable=not progress,
                            file=sys.stderr))
    done: List[Utterance] = []
    for u, target, reason in zip(utterances, targets, reasons):
        if reason is not None:
            report(CorpusError(u.path, f"could not decode the clip ({reason}); skipped"), strict, skipped)
            continue
        done.append(replace(u, path=target, extra={**u.extra, "clip": str(u.path)}))
    return done
