"""A synthetic corpus in CaFE's exact layout, so every command can be tried without downloading data.

THE SIGNALS ARE SYNTHETIC. Their "emotions" are hand-set prosody rules (pitch level and range,
tempo, loudness, spectral tilt, jitter) on a buzz filtered through vowel-like resonances. Numbers
obtained on this corpus say nothing about how a model handles real emotional speech; they only show
that the pipeline runs and that a probe can pick up prosodic differences.

Layout (as ``CaFE_48k.zip`` unpacks with Python's zipfile)::

    <out>/CaFE_<rate>k/Neutre/<actor>-N-1-<sentence>.wav
    <out>/CaFE_<rate>k/<Colère|Dégoût|Joie|Peur|Surprise|Tristesse>/<Faible|Fort>/<actor>-<E>-<1|2>-<s>.wav
    <out>/sentences.csv      file,sentence,text  (the CaFE sentence each file says; a transcript)
    <out>/transcripts.csv    path,text  (the same, as `care-pretrain targets --transcripts` reads it)
    <out>/README.txt         this warning

12 actors (odd = male) x (6 neutral + 6 emotions x 2 intensities x 6 sentences) = 936 files by
default, 1-2 s each; `n_actors` / `n_sentences` make it smaller. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from care_core import atomic

# The six CaFE sentences (Gournay et al. 2018), with a rough vowel sequence per sentence used to
# pick the resonances of each synthetic syllable.
SENTENCES: Dict[int, Tuple[str, str]] = {
    1: ("Un cheval fou dans mon jardin", "œ ə a u ã ɔ a ɛ"),
    2: ("Deux ânes aigris au pelage brun", "ø a ə ɛ i o ə a œ"),
    3: ("Trois cygnes aveugles au bord du lac", "a i a œ ə o ɔ y a"),
    4: ("Quatre vieilles truies éléphantesques", "a ə i ɛ i e e a ɛ"),
    5: ("Cinq pumas fiers et passionnés", "ɛ y a ɛ e a i ɔ e"),
    6: ("Six ours aimants domestiqués", "i u ɛ ã ɔ ɛ i e"),
}
VOWELS = {  # F1, F2, F3 in Hz (adult male; scaled per speaker)
    "a": (750, 1300, 2500), "e": (400, 2100, 2700), "ɛ": (550, 1800, 2550), "i": (280, 2250, 2900),
    "o": (400, 800, 2400), "ɔ": (550, 900, 2400), "u": (300, 750, 2300), "y": (280, 1800, 2200),
    "ø": (380, 1450, 2300), "œ": (550, 1450, 2400), "ə": (500, 1450, 2450), "ã": (650, 1100, 2400),
}

# Folder names and letters as in CaFE; intensity folders only for the non-neutral emotions.
EMOTIONS = {  # letter: (folder, label)
    "N": ("Neutre", "neutral"), "C": ("Colère", "anger"), "D": ("Dégoût", "disgust"),
    "J": ("Joie", "happiness"), "P": ("Peur", "fear"), "S": ("Surprise", "surprise"),
    "T": ("Tristesse", "sadness"),
}
INTENSITY_FOLDERS = {1: "Faible", 2: "Fort"}


@dataclass(frozen=True)
class Prosody:
    """Deviations from a speaker's neutral voice; intensity 2 scales them by `strong`."""

    f0: float = 1.0          # pitch level multiplier
    f0_range: float = 0.12   # per-syllable pitch excursion, fraction of f0
    tempo: float = 1.0       # syllables per second multiplier
    energy: float = 1.0      # amplitude multiplier
    tilt: float = 1.2        # harmonic roll-off exponent (lower = brighter, pressed voice)
    jitter: float = 0.005    # random f0 perturbation, fraction of f0
    final_rise: float = 0.0  # pitch rise over the last syllables, fraction of f0


PROSODY = {
    "N": Prosody(),
    "C": Prosody(f0=1.30, f0_range=0.30, tempo=1.15, energy=1.8, tilt=0.8, jitter=0.01),
    "D": Prosody(f0=0.92, f0_range=0.20, tempo=0.85, energy=0.9, tilt=1.3, jitter=0.012),
    "J": Prosody(f0=1.35, f0_range=0.40, tempo=1.10, energy=1.4, tilt=1.0),
    "P": Prosody(f0=1.50, f0_range=0.22, tempo=1.20, energy=0.8, tilt=1.2, jitter=0.03),
    "S": Prosody(f0=1.40, f0_range=0.35, tempo=1.00, energy=1.3, tilt=1.0, final_rise=0.5),
    "T": Prosody(f0=0.85, f0_range=0.05, tempo=0.82, energy=0.6, tilt=1.6, jitter=0.008),
}
STRONG = 1.6  # how much further from neutral intensity 2 ("Fort") goes


@dataclass(frozen=True)
class DemoConfig:
    sample_rate: int = 48000
    n_actors: int = 12
    n_sentences: int = 6
    syllable_seconds: float = 0.12  # neutral syllable length; ~8-9 syllables give 1-2 s files
    n_harmonics: int = 40
    peak: float = 0.5


def _strengthen(p: Prosody, intensity: int) -> Prosody:
    if intensity == 1:
        return p
    n, k = Prosody(), STRONG
    return Prosody(*(nv + k * (pv - nv) if name != "tilt" else max(0.4, nv + k * (pv - nv))
                     for name, pv, nv in zip(Prosody.__dataclass_fields__, vars(p).values(), vars(n).values())))


def _speaker(actor: int, seed: int) -> Tuple[float, float, float]:
    """(f0 Hz, formant scale, tempo) of an actor: odd = male, as in CaFE."""
    rng = np.random.default_rng([seed, actor, 7])
    male = actor % 2 == 1
    f0 = (115 if male else 205) * float(np.exp(rng.normal(0, 0.08)))
    formant = (1.0 if male else 1.15) * float(np.exp(rng.normal(0, 0.03)))
    tempo = float(np.exp(rng.normal(0, 0.06)))
    return f0, formant, tempo


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1 - r], a, x)


def synthesize(actor: int, letter: str, intensity: int, sentence: int, cfg: DemoConfig,
               seed: int) -> np.ndarray:
    """One utterance as float32 in [-peak, peak]."""
    sr = cfg.sample_rate
    rng = np.random.default_rng([seed, actor, ord(letter), intensity, sentence])
    base_f0, fscale, spk_tempo = _speaker(actor, seed)
    p = _strengthen(PROSODY[letter], intensity)
    vowels = SENTENCES[sentence][1].split()
    syl = cfg.syllable_seconds / (p.tempo * spk_tempo)
    pieces = []
    n_syl = len(vowels)
    for i, v in enumerate(vowels):
        n = int(syl * sr * rng.uniform(0.8, 1.2))
        t = np.arange(n) / sr
        pos = i / max(1, n_syl - 1)
        accent = p.f0_range * np.sin(np.pi * t / t[-1]) * rng.uniform(0.3, 1.0) * rng.choice([-1, 1])
        rise = p.final_rise * max(0.0, pos - 0.6) / 0.4
        f0 = base_f0 * p.f0 * (1 - 0.12 * pos + accent + rise * t / t[-1])
        f0 = f0 * (1 + p.jitter * rng.standard_normal(n).cumsum() / np.sqrt(np.arange(1, n + 1)))
        phase = 2 * np.pi * np.cumsum(f0) / sr + rng.uniform(0, 2 * np.pi)
        h = np.arange(1, cfg.n_harmonics + 1)[:, None]
        alive = (h * f0.max() < 0.45 * sr).astype(float)
        src = (alive * np.sin(h * phase) / h ** p.tilt).sum(axis=0)
        src += 0.05 * src.std() * rng.standard_normal(n)  # breath, relative to the voice
        y = src
        for formant, bw in zip(VOWELS[v], (80, 100, 140)):
            y = _resonator(y, formant * fscale, bw, sr)
        env = np.sin(np.pi * np.linspace(0, 1, n)) ** 0.6
        voiced = y * env
        pieces.append(voiced)
        gap = int(sr * rng.uniform(0.02, 0.05) / p.tempo)  # a consonant-like noise burst
        burst = rng.standard_normal(gap) * np.hanning(gap) * 0.1 * voiced.std()
        pieces.append(burst)
    lead = np.zeros(int(0.05 * sr))
    y = np.concatenate([lead, *pieces, lead])
    y = y / (np.abs(y).max() + 1e-9) * cfg.peak * min(1.0, p.energy / 2)
    return y.astype(np.float32)


def file_plan(cfg: DemoConfig) -> List[Tuple[int, str, int, int]]:
    """(actor, letter, intensity, sentence) for every file, CaFE's inventory."""
    plan = []
    for actor in range(1, cfg.n_actors + 1):
        for letter in EMOTIONS:
            for intensity in ((1,) if letter == "N" else (1, 2)):
                for sentence in range(1, cfg.n_sentences + 1):
                    plan.append((actor, letter, intensity, sentence))
    return plan


def relative_path(root_name: str, actor: int, letter: str, intensity: int, sentence: int) -> Path:
    folder = EMOTIONS[letter][0]
    name = f"{actor:02d}-{letter}-{intensity}-{sentence}.wav"
    if letter == "N":
        return Path(root_name) / folder / name
    return Path(root_name) / folder / INTENSITY_FOLDERS[intensity] / name


def write_demo_corpus(out, seed: int = 0, cfg: Optional[DemoConfig] = None, progress: bool = False) -> Dict:
    """Write the corpus under `out`; existing complete files are kept (re-running resumes)."""
    cfg = cfg or DemoConfig()
    if not 1 <= cfg.n_sentences <= 6:
        raise ValueError(f"n_sentences must be 1-6, got {cfg.n_sentences}")
    if not 1 <= cfg.n_actors <= 12:
        raise ValueError(f"n_actors must be 1-12, got {cfg.n_actors}")
    if cfg.sample_rate not in (16000, 48000):
        raise ValueError(f"sample_rate must be 16000 or 48000, got {cfg.sample_rate}")
    out = Path(out)
    root_name = f"CaFE_{cfg.sample_rate // 1000}k"
    plan = file_plan(cfg)
    rows = []
    iterator = plan
    if progress:
        from tqdm import tqdm
        iterator = tqdm(plan, desc="demo corpus")
    for actor, letter, intensity, sentence in iterator:
        rel = relative_path(root_name, actor, letter, intensity, sentence)
        path = out / rel
        if not path.is_file():
            with atomic.atomic_path(path) as tmp:
                sf.write(str(tmp), synthesize(actor, letter, intensity, sentence, cfg, seed), cfg.sample_rate,
                         subtype="PCM_16", format="WAV")
        rows.append((rel.as_posix(), sentence, SENTENCES[sentence][0]))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["file", "sentence", "text"])
    w.writerows(rows)
    atomic.write_text(out / "sentences.csv", buf.getvalue())
    buf = io.StringIO()  # what `care-pretrain targets --transcripts` reads: path (relative to the CSV), text
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "text"])
    w.writerows((rel, text) for rel, _, text in rows)
    atomic.write_text(out / "transcripts.csv", buf.getvalue())
    atomic.write_text(out / "README.txt", __doc__)
    return {"root": str(out / root_name), "n_files": len(rows), "sample_rate": cfg.sample_rate, "seed": seed}


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    p = argparse.ArgumentParser(
        prog="care-superb demo-corpus",
        description="Write a synthetic corpus in CaFE's layout (prepare it as emotion_cafe). "
                    "Its emotions are hand-set prosody rules: results on it mean nothing about real emotion.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample-rate", type=int, default=48000, choices=(16000, 48000))
    p.add_argument("--actors", type=int, default=12, help="number of actors, 1-12 (default 12)")
    p.add_argument("--sentences", type=int, default=6, help="sentences per emotion and intensity, 1-6 (default 6)")
    args = p.parse_args(argv)
    info = write_demo_corpus(args.out, args.seed, DemoConfig(sample_rate=args.sample_rate, n_actors=args.actors,
                                                             n_sentences=args.sentences), progress=True)
    print(f"wrote {info['n_files']} files under {info['root']} (synthetic; see README.txt); "
          f"prepare with: care-superb prepare emotion_cafe --root {info['root']} --out data/emotion_cafe")
    return info


if __name__ == "__main__":
    main()
