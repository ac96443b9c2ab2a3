"""MSP-IMPROV (Busso et al., IEEE TAC 2017, "MSP-IMPROV: An Acted Corpus of Dyadic Interactions to
Study Emotion Perception"), https://ecs.utdallas.edu/research/researchgroups/msp-lab/ — root holds
`Evaluation.txt` (some copies: `Evalution.txt`) and `[Audio/]session{1-6}/S<nn><E>/<R|S|T|P>/*.wav`.

`Evaluation.txt` is blank-line-separated blocks. The header line names the video
(`UTD-IMPROV-S01A-F01-S-FM01.avi; N; A:3.000000; V:3.500000; D:3.000000 ; N:3.000000;`), whose audio
is `MSP-IMPROV-S01A-F01-S-FM01.wav`; the rater lines that follow are skipped. Values are read by their
prefix (A arousal, V valence, D dominance, N naturalness) because public parsers disagree on the order.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from downstream_tasks.protocol import register_fold_rule
from .base import CorpusError, Utterance, iter_files, report

CORPUS = "mspimprov"
LABEL_FILES = ("Evaluation.txt", "Evalution.txt")
TARGETS = ("valence", "arousal", "dominance")
VALUE_PREFIX = {"A": "arousal", "V": "valence", "D": "dominance", "N": "naturalness"}
CONSENSUS = {"A": "angry", "H": "happy", "S": "sad", "N": "neutral", "O": "other", "X": "no_agreement"}
SCORE_RANGE = (1.0, 5.0)
SESSIONS = (1, 2, 3, 4, 5, 6)

NAME_RE = re.compile(r"^MSP-IMPROV-S(\d{2})([AHSN])-([FM])(\d{2})-([RSTP])-([FM]{2}\d+)$")
HEADER_RE = re.compile(r"^UTD-IMPROV-(\S+?)\.avi\s*;")
VALUE_RE = re.compile(r"^([A-Z])\s*:\s*(\S+)$")



def parse_name(name: str) -> dict:
    """Facts encoded in `MSP-IMPROV-S01A-F01-S-FM01`; the speaker is sex + session (`F01`)."""
    m = NAME_RE.match(name)
    if not m:
        raise ValueError(f"not an MSP-IMPROV utterance name: {name!r}")
    sentence, target, sex, session, rec, turn = m.groups()
    return dict(sentence=int(sentence), target_emotion=target, speaker=f"{sex}{session}", session=int(session),
                recording=rec, turn=turn)


def read_evaluation(path: Path) -> Dict[str, dict]:
    """`MSP-IMPROV-…` name -> {consensus, arousal, valence, dominance, naturalness (NaN when absent)}."""
    path = Path(path)
    out: Dict[str, dict] = {}
    text = path.read_text(encoding="utf-8", errors="replace")
    expect_header = True
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            expect_header = True
            continue
        # A header is recognised by its prefix, so a missing blank line cannot hide a block.
        if not line.startswith("UTD-IMPROV-"):
            if expect_header:
                raise CorpusError(path, f"line {lineno}: block does not start with `UTD-IMPROV-….avi;`: {line!r}")
            continue  # rater line: `<rater>; <Angry|Happy|Sad|Neutral|Other>; …`
        expect_header = False
        m = HEADER_RE.match(line)
        if not m:
            raise CorpusError(path, f"line {lineno}: malformed block header (expected `UTD-IMPROV-….avi;`): {line!r}")
        name = f"MSP-IMPROV-{m.group(1)}"
        if not NAME_RE.match(name):
            raise CorpusError(path, f"line {lineno}: unexpected utterance name {m.group(1)!r}")
        fields = [f.strip() for f in line.split(";")[1:]]
        fields = [f for f in fields if f]
        if not fields or fields[0] not in CONSENSUS:
            raise CorpusError(path, f"line {lineno}: unknown consensus code {fields[0] if fields else ''!r}")
        rec = {"consensus": CONSENSUS[fields[0]], "naturalness": math.nan}
        for f in fields[1:]:
            vm = VALUE_RE.match(f)
            if not vm or vm.group(1) not in VALUE_PREFIX:
                raise CorpusError(path, f"line {lineno}: unexpected field {f!r}")
            try:
                value = float(vm.group(2))
            except ValueError as exc:
                raise CorpusError(path, f"line {lineno}: non-numeric value in {f!r}") from exc
            if not math.isnan(value) and not SCORE_RANGE[0] <= value <= SCORE_RANGE[1]:
                raise CorpusError(path, f"line {lineno}: {f!r} outside {list(SCORE_RANGE)}")
            rec[VALUE_PREFIX[vm.group(1)]] = value
        missing = [t for t in TARGETS if t not in rec]
        if missing:
            raise CorpusError(path, f"line {lineno}: no value for {missing} in {line!r}")
        if name in out:
            raise CorpusError(path, f"line {lineno}: second block for {name}")
        out[name] = rec
    if not out:
        raise CorpusError(path, "no evaluation blocks found")
    return out


def find_label_file(root: Path) -> Path:
    for name in LABEL_FILES:
        hits = list(iter_files(root, name))
        if len(hits) > 1:
            raise CorpusError(root, f"{len(hits)} copies of {name}: {', '.join(map(str, hits))}")
        if hits:
            return hits[0]
    raise CorpusError(root, f"no {' or '.join(LABEL_FILES)} under the MSP-IMPROV root")


def parse_mspimprov(root: Path | str, *, strict: bool = False, skipped: Optional[list] = None) -> List[Utterance]:
    """Turns with valence/arousal/dominance targets in `extra` (label None: a regression task).

    Turns with a NaN target, or whose wav is missing, are skipped and reported (or raise under
    `strict` for missing audio; NaN targets are data, not damage, and are always just dropped).
    A wav whose folder disagrees with its name (session, sentence/emotion, recording type) raises.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(root, "MSP-IMPROV root is not a directory")
    label_file = find_label_file(root)
    evaluation = read_evaluation(label_file)
    wavs: Dict[str, Path] = {}
    for p in iter_files(root, "MSP-IMPROV-*.wav"):
        if p.stem in wavs:
            raise CorpusError(p, f"second copy of {p.name} (first: {wavs[p.stem]})")
        try:
            info = parse_name(p.stem)
        except ValueError as exc:
            raise CorpusError(p, str(exc)) from exc
        expected = (f"session{info['session']}", f"S{p.stem[12:15]}", info["recording"])
        if tuple(x.lower() for x in p.parts[-4:-1]) != tuple(x.lower() for x in expected):
            raise CorpusError(p, f"expected under {'/'.join(expected)}/ (session{{1-6}}/S<nn><E>/<R|S|T|P>)")
        wavs[p.stem] = p
    if not wavs:
        raise CorpusError(root, "no MSP-IMPROV-*.wav found (expected [Audio/]session{1-6}/S<nn><E>/<R|S|T|P>/)")
    out: List[Utterance] = []
    for name in sorted(evaluation):
        rec = evaluation[name]
        nan_targets = [t for t in TARGETS if math.isnan(rec[t])]
        if nan_targets:
            report(CorpusError(label_file, f"{name}: NaN {'/'.join(nan_targets)}; dropped"), False, skipped)
            continue
        wav = wavs.get(name)
        if wav is None:
            report(CorpusError(label_file, f"{name}: no audio file {name}.wav; skipped"), strict, skipped)
            continue
        info = parse_name(name)
        out.append(Utterance(
            id=f"{CORPUS}-{name}", path=wav, speaker=info["speaker"], label=None, corpus=CORPUS,
            extra=dict(valence=rec["valence"], arousal=rec["arousal"], dominance=rec["dominance"],
                       naturalness=rec["naturalness"], consensus=rec["consensus"], session=info["session"],
                       sentence=info["sentence"], target_emotion=info["target_emotion"],
                       recording=info["recording"], turn=info["turn"]),
        ))
    return out


def session_partner(speaker: str) -> str:
    """The other actor of the same session: `F03` <-> `M03`."""
    if len(speaker) != 3 or speaker[0] not in "FM" or not speaker[1:].isdigit():
        raise ValueError(f"not an MSP-IMPROV speaker id (sex + session, e.g. F01): {speaker!r}")
    return ("M" if speaker[0] == "F" else "F") + speaker[1:]


@register_fold_rule("mspimprov_speaker")
def mspimprov_speaker(utterances: Sequence[Utterance], fold: int, **_) -> List[str]:
    """Twelve folds over sorted speakers: fold k (0-based) tests speaker k, validates on its session
    partner (the other actor of the same session), trains on the other ten."""
    speakers = sorted({u.speaker for u in utterances})
    if fold >= len(speakers):
        raise ValueError(f"mspimprov_speaker: fold {fold + 1} needs {fold + 1} speakers, found {len(speakers)}")
    test = speakers[fold]
    dev = session_partner(test)
    return ["test" if u.speaker == test else "dev" if u.speaker == dev else "train" for u in utterances]
