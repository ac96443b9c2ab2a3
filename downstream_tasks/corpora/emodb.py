"""EmoDB (Berlin Database of Emotional Speech, Burkhardt et al. 2005, http://emodb.bilderbar.info).

Layout as distributed: ``wav/<speaker><text><emotion><version>.wav`` (535 files, 16 kHz) next to
label folders this parser does not need. Emotion letters are German initials.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

from downstream_tasks.corpora.base import CorpusError, Utterance, iter_files

NAME = re.compile(r"(\d{2})([ab]\d{2})([A-Z])([a-z])\.(?i:wav)")
LETTERS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "joy", "T": "sadness",
           "N": "neutral"}
SPEAKERS = {"03": "m", "08": "f", "09": "f", "10": "m", "11": "m", "12": "m", "13": "f", "14": "f",
            "15": "m", "16": "f"}


def parse_emodb(root) -> List[Utterance]:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "EmoDB root is not a directory")
    out = []
    for path in iter_files(root, "*.wav"):
        m = NAME.fullmatch(path.name)
        if m is None:
            raise CorpusError(path, "file name is not EmoDB's <speaker><text><emotion><version>.wav")
        speaker, text, letter, version = m.groups()
        if letter not in LETTERS:
            raise CorpusError(path, f"unknown emotion letter {letter!r} (known: {''.join(LETTERS)})")
        if speaker not in SPEAKERS:
            raise CorpusError(path, f"unknown speaker {speaker} (known: {', '.join(sorted(SPEAKERS))})")
        out.append(Utterance(
            id=f"emodb-{path.stem}", path=path, speaker=speaker, label=LETTERS[letter], corpus="emodb",
            extra={"text": text, "version": version, "sex": SPEAKERS[speaker]}))
    if not out:
        raise CorpusError(root, "no .wav files found (expected wav/<name>.wav)")
    return out
