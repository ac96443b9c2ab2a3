"""Manifest rows → s3prl batches: ``(wav: np.ndarray 16 kHz, label, id)`` per item.

`label` is the class index in the task's label order, or a float32 array of the regression targets.
`collate` keeps s3prl's convention (``zip(*samples)``): the runner turns wavs into tensors itself and
hands the other tuples to the expert's `forward` unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from torch.utils.data import Dataset

from downstream_tasks.audio import AudioConfig, load_audio
from downstream_tasks.manifest import Manifest, ManifestRow, read_manifest
from downstream_tasks.protocol import SPLITS, TaskSpec


class ManifestDataset(Dataset):
    def __init__(self, rows: Sequence[ManifestRow], spec: TaskSpec, audio: AudioConfig = AudioConfig()):
        self.rows = list(rows)
        self.spec = spec
        self.audio = audio
        self.class_index = {label: i for i, label in enumerate(spec.labels)}
        for r in self.rows:
            if spec.kind == "classification" and r.label not in self.class_index:
                raise ValueError(f"{r.path}: label {r.label!r} is not one of {list(spec.labels)}")

    def __len__(self) -> int:
        return len(self.rows)

    def target(self, row: ManifestRow):
        if self.spec.kind == "classification":
            return self.class_index[row.label]
        return np.asarray([row.targets[t] for t in self.spec.targets], dtype=np.float32)

    def __getitem__(self, i: int):
        r = self.rows[i]
        wav = load_audio(r.path, self.audio, segments=r.segments)
        return wav.numpy(), self.target(r), r.id


def collate(samples):
    return zip(*samples)


def split_rows(manifest: Manifest, spec: TaskSpec, fold: str) -> Dict[str, List[ManifestRow]]:
    """train/dev/test rows of one fold; a task whose test *is* dev (DAIC-WOZ) gets dev twice."""
    out = {s: manifest.split(fold, s) for s in SPLITS}
    if spec.test_from_dev:
        out["test"] = out["dev"]
    for split, rows in out.items():
        if not rows:
            raise ValueError(f"{fold} has an empty {split} split")
    return out


def build_datasets(manifest_dir, spec: TaskSpec, fold: str,
                   audio: AudioConfig = AudioConfig()) -> Dict[str, ManifestDataset]:
    manifest = read_manifest(Path(manifest_dir))
    return {s: ManifestDataset(rows, spec, audio) for s, rows in split_rows(manifest, spec, fold).items()}
