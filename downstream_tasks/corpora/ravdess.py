"""RAVDESS song (Livingstone & Russo 2018, https://zenodo.org/record/1188976).

Layout as distributed: ``Actor_XX/MM-CC-EE-II-SS-RR-AA.wav`` from ``Audio_Song_Actors_01-24.zip``
(possibly under a folder named like the zip). Only song files (channel 02) are this task's; speech
files (channel 01) found under the same root are ignored so one RAVDESS root can hold both zips.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

from downstream_tasks.corpora.base import CorpusError, Utterance, iter_files

NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.(?i:wav)")
SONG_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful"}
AUDIO_ONLY, SPEECH, SONG = "03", "01", "02"


def parse_ravdess_song(root) -> List[Utterance]:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "RAVDESS root is not a directory")
    out = []
    for path in iter_files(root, "*.wav"):
        m = NAME.fullmatch(path.name)
        if m is None:
            raise CorpusError(path, "file name is not RAVDESS's MM-CC-EE-II-SS-RR-AA.wav")
        modality, channel, emotion, intensity, statement, repetition, actor = m.groups()
        if modality != AUDIO_ONLY:
            raise CorpusError(path, f"modality {modality} is not 03 (audio-only)")
        if channel == SPEECH:
            continue
        if channel != SONG:
            raise CorpusError(path, f"vocal channel {channel} is neither 01 (speech) nor 02 (song)")
        if emotion not in SONG_EMOTIONS:
            raise CorpusError(path, f"emotion code {emotion} does not exist for song (01-06)")
        if intensity not in ("01", "02") or (emotion == "01" and intensity != "01"):
            raise CorpusError(path, f"intensity {intensity} is not valid for emotion {emotion}")
        if statement not in ("01", "02") or repetition not in ("01", "02"):
            raise CorpusError(path, f"statement {statement} / repetition {repetition} outside 01-02")
        if not 1 <= int(actor) <= 24:
            raise CorpusError(path, f"actor {actor} outside 01-24")
        if path.parent.name != f"Actor_{actor}":
            raise CorpusError(path, f"actor {actor} file is not inside Actor_{actor}/")
        out.append(Utterance(
            id=f"ravdess-{path.stem}", path=path, speaker=actor, label=SONG_EMOTIONS[emotion],
            corpus="ravdess",
            extra={"intensity": int(intensity), "statement": int(statement),
                   "repetition": int(repetition), "sex": "m" if int(actor) % 2 else "f"}))
    if not out:
        raise CorpusError(root, "no RAVDESS song files found (expected Actor_XX/03-02-....wav)")
    return out
