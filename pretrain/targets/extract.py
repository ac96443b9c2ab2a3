"""`care-pretrain targets`: audio files -> cache of semantic + acoustic teacher targets.

Work is cut into chunks of ``shard_size`` consecutive files of the worker's part of the sorted list.
A chunk is computed completely, written as one shard (tmp + fsync + rename), and only then recorded
in the worker's jsonl index; that record is what makes the chunk "done". A rerun after a crash or
kill therefore skips the recorded chunks and recomputes the others, giving the same shards an
uninterrupted run writes. Workers (``--shard K/N`` or torchrun's RANK/WORLD_SIZE) take every N-th
file, so their parts are disjoint and need no coordination; whichever worker finishes last sees all
``done-*`` markers and merges the index (``--merge`` does it by hand).
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from care_core import atomic
from pretrain.targets.acoustic import AcousticSettings, build_acoustic, to_model_frames
from pretrain.targets.audio import (
    AudioChecks,
    BadAudioError,
    list_audio,
    load_audio,
    partition,
)
from pretrain.targets.frames import SAMPLE_RATE, care_frame_count, care_hop
from pretrain.targets.store import (
    RUN_FILE,
    ChunkRecord,
    ShardItem,
    SkippedItem,
    TargetStoreError,
    WorkerIndex,
    merge_index,
    read_json_object,
    worker_tag,
    write_shard,
)
from pretrain.targets.text import TextEncoder, TextEncoderSettings
from pretrain.targets.transcripts import (
    TranscriptTable,
    WhisperSettings,
    WhisperTranscriber,
)

STAGES = ("audio", "transcripts", "text", "acoustic", "write")


class TeacherFailedError(RuntimeError):
    """A teacher raised on one file: not bad input (that is skipped), so the run stops, naming the file."""

SETTINGS_VERSION = 1


@dataclass
class ExtractConfig:
    """Everything one worker needs. ``sleep_after_shard`` only exists so tests can kill a run mid-way."""

    audio: str
    out: str
    transcripts: Optional[str] = None  # CSV path_or_id,text; None = Whisper
    transcripts_encoding: str = "utf-8"
    whisper: WhisperSettings = field(default_factory=WhisperSettings)
    text: TextEncoderSettings = field(default_factory=TextEncoderSettings)
    acoustic: AcousticSettings = field(default_factory=AcousticSettings)
    checks: AudioChecks = field(default_factory=AudioChecks)
    rank: int = 0
    world_size: int = 1
    shard_size: int = 256
    device: str = "cpu"
    merge: bool = True  # merge the index when this worker sees every worker finished
    progress: bool = True
    sleep_after_shard: float = 0.0

    def __post_init__(self):
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        worker_tag(self.rank, self.world_size)  # validates rank/world_size


def parse_shard(spec: str) -> Tuple[int, int]:
    """``"K/N"`` (0-based K) -> (K, N)."""
    try:
        k, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise ValueError(f"--shard {spec!r}: expected K/N, e.g. 0/4") from None
    if n < 1 or not (0 <= k < n):
        raise ValueError(f"--shard {spec!r}: need 0 <= K < N (K is 0-based)")
    return k, n


def env_rank() -> Optional[Tuple[int, int]]:
    """(rank, world size) when started by torchrun or as one of several ``srun`` tasks, else None
    (the rules live in ``pretrain.distributed``, shared with the trainer)."""
    from pretrain.distributed import from_environ

    env = from_environ()
    return (env.rank, env.world_size) if env is not None else None


def _list_fingerprint(items: Sequence[Tuple[str, str]]) -> str:
    """Hash of the file list; names are hashed as the bytes on disk (os.fsencode), so a name that is
    not valid UTF-8 (a Latin-1 corpus unpacked as is) hashes like any other."""
    h = hashlib.sha256()
    for utt_id, path in items:
        h.update(os.fsencode(utt_id) + b"\t" + os.fsencode(path) + b"\n")
    return h.hexdigest()[:16]


def _file_fingerprint(path: Optional[str]) -> Optional[str]:
    """Content hash of a teacher file (PASE+ checkpoint, config): resuming with another one is refused."""
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _run_settings(cfg: ExtractConfig, items, table: Optional[TranscriptTable]) -> Dict[str, Any]:
    """What every worker and every resumed run of one cache must agree on."""
    if table is not None:
        transcripts = f"csv:{table.fingerprint()}"
    else:
        w = cfg.whisper
        transcripts = f"whisper:{w.model}:{w.language or 'auto'}:beam{w.beam_size or 0}:len{w.sample_len or 0}"
    return {
        "version": SETTINGS_VERSION,
        "world_size": cfg.world_size,
        "shard_size": cfg.shard_size,
        "num_files": len(items),
        "list_sha": _list_fingerprint(items),
        "transcripts": transcripts,
        "text_encoder": cfg.text.name,
        "text_max_length": cfg.text.max_length,
        "acoustic": cfg.acoustic.kind,
        **({"pase_ckpt_sha": _file_fingerprint(cfg.acoustic.pase_ckpt),
            "pase_config_sha": _file_fingerprint(cfg.acoustic.pase_config)} if cfg.acoustic.kind == "pase+" else {}),
        "acoustic_subsample": cfg.acoustic.subsample,
        "acoustic_std_offset": cfg.acoustic.std_offset,
        "acoustic_rate_hz": SAMPLE_RATE // care_hop(),
        "sample_rate": SAMPLE_RATE,
        "silence_peak": cfg.checks.silence_peak,
        "min_samples": cfg.checks.effective_min_samples,
    }


def _check_settings(cache: Path, wanted: Dict[str, Any]) -> None:
    path = cache / RUN_FILE
    if not path.exists():
        return
    have = read_json_object(path, "the settings file of a target cache")
    diff = [k for k in wanted if k in have and have[k] != wanted[k]]
    if diff:
        detail = "; ".join(f"{k}: cache has {have[k]!r}, this run {wanted[k]!r}" for k in diff)
        raise TargetStoreError(f"{path}: this cache was made with other settings ({detail}); use a new --out")


class _Timer:
    def __init__(self):
        self.seconds = {s: 0.0 for s in STAGES}
        self.count = {s: 0 for s in STAGES}

    def add(self, stage: str, seconds: float, n: int):
        self.seconds[stage] += seconds
        self.count[stage] += n

    def rates(self) -> Dict[str, Optional[float]]:
        return {s: (self.count[s] / self.seconds[s] if self.seconds[s] > 0 else None) for s in STAGES}


class Extractor:
    """Teachers bundled for one chunk at a time. Teachers can be injected (tests, notebooks)."""

    def __init__(self, cfg: ExtractConfig, table: Optional[TranscriptTable], transcriber=None, text_encoder=None,
                 acoustic=None):
        self.cfg = cfg
        self.table = table
        # cheapest first, so a missing PASE+ checkpoint fails before Whisper-large is loaded
        self.acoustic = acoustic or build_acoustic(cfg.acoustic, cfg.device)
        self.text_encoder = text_encoder or TextEncoder(cfg.text, cfg.device)
        self.transcriber = transcriber
        if table is None and transcriber is None:
            self.transcriber = WhisperTranscriber(cfg.whisper, cfg.device)
        self.timer = _Timer()
        self.padded_frames = 0
        self.empty_transcripts = 0

    def chunk(self, pairs: Sequence[Tuple[str, str]]):
        """Targets for one chunk -> (items, semantic list, acoustic list, skipped)."""
        t = self.timer
        skipped: List[SkippedItem] = []
        loaded = []
        t0 = time.perf_counter()
        teacher_min = int(getattr(self.acoustic, "min_samples", 0))
        for utt_id, path in pairs:
            try:
                wav = load_audio(path, self.cfg.checks)
            except BadAudioError as err:
                skipped.append(SkippedItem(utt_id, path, err.reason, err.detail))
                continue
            if wav.samples.shape[0] < teacher_min:
                skipped.append(SkippedItem(utt_id, path, "too_short",
                                           f"{wav.samples.shape[0]} samples at 16 kHz < {teacher_min} (acoustic teacher)"))
                continue
            loaded.append((utt_id, path, wav))
        t.add("audio", time.perf_counter() - t0, len(pairs))

        t0 = time.perf_counter()
        if self.table is not None:
            texts = [self.table.lookup(u, p) for u, p, _ in loaded]
        else:
            texts = self.transcriber.transcribe([w.samples for _, _, w in loaded])
        t.add("transcripts", time.perf_counter() - t0, len(loaded))
        keep = []
        for (utt_id, path, wav), text in zip(loaded, texts):
            if text is None:
                skipped.append(SkippedItem(utt_id, path, "no_transcript", "not in the transcript CSV"))
            else:
                self.empty_transcripts += int(text == "")
                keep.append((utt_id, path, wav, text))

        t0 = time.perf_counter()
        sem = self.text_encoder.encode([k[3] for k in keep])
        t.add("text", time.perf_counter() - t0, len(keep))

        items, semantic, acoustic = [], [], []
        t0 = time.perf_counter()
        for (utt_id, path, wav, text), s in zip(keep, sem):
            n = int(wav.samples.shape[0])
            try:
                raw = self.acoustic.frames_100hz(wav.samples)
            except Exception as err:  # a teacher bug or a device error: stop, but say on which file
                raise TeacherFailedError(f"{path}: the {self.cfg.acoustic.kind} teacher failed on this file "
                                         f"({type(err).__name__}: {err})") from err
            if raw.shape[0] == 0 or not np.isfinite(raw).all() or not np.isfinite(s).all():
                skipped.append(SkippedItem(utt_id, path, "nan_target", "teacher output has NaN/inf or no frames"))
                continue
            target, pad = to_model_frames(raw, n, self.cfg.acoustic)
            self.padded_frames += pad
            items.append(ShardItem(utt_id, path, n, care_frame_count(n), text, wav.orig_sample_rate, wav.orig_channels))
            semantic.append(s)
            acoustic.append(target)
        t.add("acoustic", time.perf_counter() - t0, len(keep))
        return items, semantic, acoustic, skipped


def run_extraction(cfg: ExtractConfig, transcriber=None, text_encoder=None, acoustic=None) -> Dict[str, Any]:
    """Compute (or resume) this worker's part; returns its summary. Teachers load only if work is left."""
    cache = Path(cfg.out)
    if cache.exists() and not cache.is_dir():
        raise ValueError(f"{cache}: --out must be a cache folder, but this is an existing file")
    cache.mkdir(parents=True, exist_ok=True)
    tag = worker_tag(cfg.rank, cfg.world_size)
    for stale in cache.glob(f"shards/.shard-{tag}-*.tmp"):  # left by a killed run of this worker
        stale.unlink(missing_ok=True)

    items = list_audio(cfg.audio)
    table = TranscriptTable(cfg.transcripts, cfg.transcripts_encoding) if cfg.transcripts else None
    settings = _run_settings(cfg, items, table)
    _check_settings(cache, settings)

    mine = partition(items, cfg.rank, cfg.world_size)
    chunks = [mine[i : i + cfg.shard_size] for i in range(0, len(mine), cfg.shard_size)]
    index = WorkerIndex(cache, tag)
    done = index.load()
    if any(c >= len(chunks) for c in done):
        raise TargetStoreError(f"{index.path}: lists chunks beyond this run's {len(chunks)}; use a new --out")
    for c, record in sorted(done.items()):
        try:  # a finished chunk counts only if its shard is still the one written
            record.verify(cache)
        except TargetStoreError as err:
            print(f"care-pretrain targets: recomputing chunk {c}: {err}", file=sys.stderr)
            del done[c]
    todo = [c for c in range(len(chunks)) if c not in done]
    done_marker = cache / f"done-{tag}.json"

    extractor = None
    if todo:
        done_marker.unlink(missing_ok=True)
        extractor = Extractor(cfg, table, transcriber, text_encoder, acoustic)
        settings["semantic_dim"] = int(extractor.text_encoder.dim)
        settings["acoustic_dim"] = int(extractor.acoustic.dim)
        _check_settings(cache, settings)
        if not (cache / RUN_FILE).exists():
            atomic.write_json(cache / RUN_FILE, settings)

        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(mine), initial=sum(len(chunks[c]) for c in done), unit="utt", desc=f"targets {tag}",
            position=cfg.rank, disable=not cfg.progress, dynamic_ncols=True,
        )
        for c in todo:
            its, sem, ac, skipped = extractor.chunk(chunks[c])
            t0 = time.perf_counter()
            shard, sha256 = write_shard(cache, tag, c, its, sem, ac)
            record = ChunkRecord(c, shard, its, skipped, sha256)
            index.append(record)
            extractor.timer.add("write", time.perf_counter() - t0, len(its))
            done[c] = record
            bar.update(len(chunks[c]))
            bar.set_postfix(skipped=sum(len(r.skipped) for r in done.values()))
            if cfg.sleep_after_shard > 0:
                time.sleep(cfg.sleep_after_shard)
        bar.close()

    summary = _summary(cfg, tag, chunks, done, extractor)
    atomic.write_json(done_marker, summary)
    if cfg.merge:
        expected = [cache / f"done-{worker_tag(r, cfg.world_size)}.json" for r in range(cfg.world_size)]
        if all(p.exists() for p in expected):
            summary["merged"] = merge_index(cache)
    return summary


def _summary(cfg, tag, chunks, done, extractor) -> Dict[str, Any]:
    reasons: Dict[str, int] = {}
    for rec in done.values():
        for s in rec.skipped:
            reasons[s.reason] = reasons.get(s.reason, 0) + 1
    out: Dict[str, Any] = {
        "worker": tag,
        "files": sum(len(c) for c in chunks),
        "chunks": len(chunks),
        "stored": sum(len(r.items) for r in done.values()),
        "skipped": sum(reasons.values()),
        "skipped_by_reason": reasons,
    }
    if extractor is not None:
        rates = extractor.timer.rates()
        out["this_session"] = {
            "utterances_per_s": {k: (round(v, 2) if v is not None and math.isfinite(v) else None) for k, v in rates.items()},
            "seconds": {k: round(v, 3) for k, v in extractor.timer.seconds.items()},
            "padded_frames": extractor.padded_frames,
            "empty_transcripts": extractor.empty_transcripts,
            "whisper_truncated_30s": getattr(extractor.transcriber, "truncated", 0),
        }
    return out


def format_summary(summary: Dict[str, Any]) -> str:
    lines = [
        f"[{summary['worker']}] {summary['stored']} stored, {summary['skipped']} skipped of {summary['files']} files"
    ]
    for reason, n in sorted(summary["skipped_by_reason"].items()):
        lines.append(f"  skipped {reason}: {n}")
    sess = summary.get("this_session")
    if sess:
        rates = ", ".join(f"{k} {v}" for k, v in sess["utterances_per_s"].items() if v is not None)
        lines.append(f"  utterances/s per stage: {rates}")
        for key in ("padded_frames", "empty_transcripts", "whisper_truncated_30s"):
            if sess[key]:
                lines.append(f"  {key}: {sess[key]}")
    if "merged" in summary:
        m = summary["merged"]
        lines.append(f"  merged index.json: {m['stored']} utterances, {m['skipped']} skipped (skipped.csv)")
    return "\n".join(lines)
