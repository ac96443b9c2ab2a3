#!/usr/bin/env python
"""Measure the fixed per-dimension scale of the handcrafted upstreams (`-u egemaps`, `-u compare`).

    python benchmarks/handcrafted_scale.py <audio files or folders> [--source TEXT] \
        [--out care_upstream/handcrafted_scale.py]

Runs openSMILE's eGeMAPSv02 and ComParE_2016 LLDs over every file (decoded to 16 kHz mono, frames
aligned as the upstream aligns them), pools all frames of all files, and writes the mean and the
population standard deviation of each dimension, with the files' names, durations and SHA-256 and
the `--source` text, as a Python module the upstream imports. Use real speech: the scale only has to
be the right order of magnitude per dimension, but synthetic signals get F0, jitter and formant
values no voice has. The audio itself is never committed.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from care_core import atomic  # noqa: E402
from care_core.audio import read_mono  # noqa: E402
from care_core.constants import SAMPLE_RATE  # noqa: E402
from care_upstream.handcrafted import FEATURE_SETS, lld_frames, make_smile  # noqa: E402

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
MIN_STD = 1e-6  # a dimension constant over all frames would divide by zero


def audio_files(inputs: List[Path]) -> List[Path]:
    files: List[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"{p}: no such file or folder")
    if not files:
        raise SystemExit(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {', '.join(map(str, inputs))}")
    return files


def measure(waves: List[np.ndarray]) -> Dict[str, Dict]:
    """{set name: {"frames": N, "lld": [(name, mean, std), ...]}} over all frames of all waveforms."""
    scale = {}
    for name, fs in FEATURE_SETS.items():
        smile = make_smile(fs)
        frames = np.concatenate([lld_frames(smile, w) for w in waves]).astype(np.float64)
        std = np.maximum(frames.std(axis=0), MIN_STD)
        rows = [(n, float(f"{m:.6g}"), float(f"{s:.6g}")) for n, m, s in zip(smile.feature_names, frames.mean(axis=0), std)]
        scale[name] = {"frames": int(frames.shape[0]), "lld": rows}
    return scale


def render(scale: Dict[str, Dict], files: List[Path], waves: List[np.ndarray], source: str) -> str:
    lines = [
        '"""Fixed per-dimension scale of the handcrafted upstreams (`care_upstream/handcrafted.py`): mean',
        "and population standard deviation of every openSMILE LLD over all 10 ms frames of the real",
        "speech listed in SOURCE_FILES (the audio is not part of this repository).",
        "",
        "Written by `python benchmarks/handcrafted_scale.py`; do not edit by hand.",
        '"""',
        "",
        f"SOURCE = {source!r}",
        "",
        "# (file name, seconds at 16 kHz, sha256 of the file)",
        "SOURCE_FILES = [",
    ]
    for f, w in zip(files, waves):
        seconds = round(len(w) / SAMPLE_RATE, 2)
        lines.append(f"    ({f.name!r}, {seconds}, {hashlib.sha256(f.read_bytes()).hexdigest()!r}),")
    lines += ["]", "", "# per feature set: frames pooled, and (LLD name, mean, std) in openSMILE's output order", "SCALE = {"]
    for name, entry in scale.items():
        lines += [f"    {name!r}: {{", f"        \"frames\": {entry['frames']},", '        "lld": [']
        lines += [f"            {row!r}," for row in entry["lld"]]
        lines += ["        ],", "    },"]
    lines += ["}", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path, help="audio files or folders of real speech")
    p.add_argument("--source", required=True, help="where the files come from (written into the module)")
    p.add_argument("--out", type=Path, default=ROOT / "care_upstream" / "handcrafted_scale.py")
    args = p.parse_args(argv)
    files = audio_files(args.inputs)
    waves = [read_mono(f, SAMPLE_RATE)[0].numpy() for f in files]
    scale = measure(waves)
    atomic.write_text(args.out, render(scale, files, waves, args.source))
    for name, entry in scale.items():
        print(f"{name}: {len(entry['lld'])} dims, {entry['frames']} frames")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
