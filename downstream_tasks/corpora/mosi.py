"""CMU-MOSI (Zadeh et al., 2016, "MOSI: Multimodal Corpus of Sentiment Intensity and Subjectivity
Analysis in Online Opinion Videos"), http://multicomp.cs.cmu.edu/resources/cmu-mosi-dataset/ — the raw
release (often under `Raw/`): `Audio/WAV_16000/Segmented/<vid>_<k>.wav`, `Labels/OpinionLevelSentiment.csv`.

Video ids are 11-character YouTube ids that may contain or start with `_` and `-` (`_dI--eQ6qVU`,
`I5y0__X72p0`), so a segment name splits on its LAST underscore. The label CSV has no header:
`start,end,video_id,segment_no,label` with label a float in [-3, 3].
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from downstream_tasks.protocol import register_fold_rule
from .base import CorpusError, Utterance, find_audio, iter_files, report, visible
from .mosi_folds import STANDARD_TEST_FOLD, STANDARD_TRAIN_FOLD, STANDARD_VALID_FOLD

CORPUS = "mosi"
CLASSES = ("negative", "positive")
LABEL_CSV = "OpinionLevelSentiment.csv"
SCORE_RANGE = (-3.0, 3.0)
#: Scores below this are negative; the paper's classes are [-3, 0) and [0, 3].
NEGATIVE_BELOW = 0.0


def sentiment_class(score: float) -> str:
    return "negative" if score < NEGATIVE_BELOW else "positive"


def _find_one(root: Path, hits: list, what: str) -> Path:
    if not hits:
        raise CorpusError(root, f"no {what} under the CMU-MOSI root")
    if len(hits) > 1:
        raise CorpusError(root, f"{len(hits)} candidates for {what}: {', '.join(map(str, hits))}")
    return hits[0]


def read_label_csv(path: Path) -> List[Tuple[str, int, float, float, float]]:
    """Rows (video, segment, start, end, score) of `OpinionLevelSentiment.csv`."""
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for lineno, cells in enumerate(csv.reader(f), 1):
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != 5:
                raise CorpusError(path, f"line {lineno}: expected 5 fields start,end,video_id,segment_no,"
                                        f"label, got {len(cells)}: {cells}")
            start, end, vid, seg, score = (c.strip() for c in cells)
            try:
                start_f, end_f, seg_i, score_f = float(start), float(end), int(seg), float(score)
            except ValueError as exc:
                raise CorpusError(path, f"line {lineno}: non-numeric field in {cells}") from exc
            if not vid or seg_i < 1:
                raise CorpusError(path, f"line {lineno}: bad video id or segment number in {cells}")
            if math.isnan(score_f) or not SCORE_RANGE[0] <= score_f <= SCORE_RANGE[1]:
                raise CorpusError(path, f"line {lineno}: sentiment {score_f} outside {list(SCORE_RANGE)}")
            rows.append((vid, seg_i, start_f, end_f, score_f))
    return rows


def parse_mosi(root: Path | str, *, strict: bool = False, skipped: Optional[list] = None) -> List[Utterance]:
    """Labelled CMU-MOSI segments with binary sentiment labels (score kept in `extra["score"]`).

    MOSI ships no speaker ids (89 speakers over 93 videos), so the video id stands in for the speaker;
    the SDK folds are video-disjoint. A labelled segment without its wav is skipped and reported (or
    raises under `strict`); wavs without a label row are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "CMU-MOSI root is not a directory")
    label_csv = _find_one(root, list(iter_files(root, LABEL_CSV)), f"Labels/{LABEL_CSV}")
    seg_dirs = [p for p in sorted(root.rglob("Segmented")) if p.is_dir() and p.parent.name == "WAV_16000"
                and visible(root, p)]
    seg_dir = _find_one(root, seg_dirs, "Audio/WAV_16000/Segmented folder")
    out: List[Utterance] = []
    seen = set()
    for vid, seg, start, end, score in read_label_csv(label_csv):
        key = f"{vid}_{seg}"
        if key in seen:
            raise CorpusError(label_csv, f"duplicate label row for {key}")
        seen.add(key)
        wav = find_audio(seg_dir / f"{key}.wav")
        if wav is None:
            report(CorpusError(seg_dir / f"{key}.wav", f"audio missing for labelled segment {key}; skipped"),
                   strict, skipped)
            continue
        out.append(Utterance(
            id=f"{CORPUS}-{key}", path=wav, speaker=vid, label=sentiment_class(score), corpus=CORPUS,
            extra=dict(video=vid, segment=seg, score=score, video_start=start, video_end=end),
        ))
    return out


def standard_split_of(video: str) -> Optional[str]:
    """`train` / `dev` / `test` for a video of the SDK folds, None for a video they do not list."""
    if video in _SPLIT_OF_VIDEO:
        return _SPLIT_OF_VIDEO[video]
    return None


_SPLIT_OF_VIDEO: Dict[str, str] = {
    **{v: "train" for v in STANDARD_TRAIN_FOLD},
    **{v: "dev" for v in STANDARD_VALID_FOLD},
    **{v: "test" for v in STANDARD_TEST_FOLD},
}


@register_fold_rule("mosi_standard")
def mosi_standard(utterances: Sequence[Utterance], fold: int, **_) -> List[str]:
    """The SDK's standard split (52 / 10 / 31 videos). A video outside it means another corpus version."""
    out = []
    for u in utterances:
        split = standard_split_of(u.extra["video"])
        if split is None:
            raise CorpusError(u.path, f"video {u.extra['video']!r} is in none of the CMU-MultimodalSDK "
                                      "standard folds")
        out.append(split)
    return out
