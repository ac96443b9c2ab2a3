"""CaFE (Canadian French Emotional speech, Gournay et al. 2018, https://zenodo.org/record/1478765).

Layout as distributed: ``CaFE_48k/Neutre/*.wav`` and ``CaFE_48k/<emotion>/{Faible,Fort}/*.wav``; the
192 kHz release is split over ``CaFE_192k_1/`` and ``CaFE_192k_2/`` with the same tree. Folder names
arrive in whatever encoding the unzip tool produced (``Colère``, ``Col\\x8are``, ``ColŠre``), so the
label comes from the file name's letter and folder names are never read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List

from downstream_tasks.corpora.base import CorpusError, Utterance, iter_files

NAME = re.compile(r"(\d{2})-([A-Z])-(\d)-(\d)\.(?i:wav)")
LETTERS = {"N": "neutral", "C": "anger", "D": "disgust", "J": "happiness", "P": "fear",
           "S": "surprise", "T": "sadness"}
N_ACTORS = 12


def _preference(path: Path) -> tuple:
    # The same recording can exist at 48 kHz and 192 kHz; the 48 kHz copy is smaller to read.
    return (0 if any("48k" in part for part in path.parts) else 1, str(path))


def parse_cafe(root) -> List[Utterance]:
    """All CaFE utterances under `root` (either release, or both; duplicates by name kept once)."""
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "CaFE root is not a directory")
    by_name: Dict[str, Path] = {}
    for path in iter_files(root, "*.wav"):
        key = path.stem + path.suffix.lower()  # x.WAV and x.wav are one recording
        if key not in by_name or _preference(path) < _preference(by_name[key]):
            by_name[key] = path
    if not by_name:
        raise CorpusError(root, "no .wav files found (expected CaFE_48k/<emotion>/... or CaFE_192k_*/...)")
    out = []
    for name in sorted(by_name):
        path = by_name[name]
        m = NAME.fullmatch(name)
        if m is None:
            raise CorpusError(path, "file name is not CaFE's <actor>-<emotion>-<intensity>-<sentence>.wav")
        actor, letter, intensity, sentence = m.groups()
        if letter not in LETTERS:
            raise CorpusError(path, f"unknown emotion letter {letter!r} (known: {''.join(LETTERS)})")
        if not 1 <= int(actor) <= N_ACTORS:
            raise CorpusError(path, f"actor {actor} outside 01-{N_ACTORS:02d}")
        if intensity not in "12" or (letter == "N" and intensity != "1"):
            raise CorpusError(path, f"intensity {intensity} is not valid for emotion {letter}")
        if not "1" <= sentence <= "6":
            raise CorpusError(path, f"sentence {sentence} outside 1-6")
        out.append(Utterance(
            id=f"cafe-{actor}-{letter}-{intensity}-{sentence}", path=path, speaker=actor,
            label=LETTERS[letter], corpus="cafe",
            extra={"intensity": int(intensity), "sentence": int(sentence),
                   "sex": "m" if int(actor) % 2 else "f"}))
    return out
