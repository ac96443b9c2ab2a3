"""On-disk layout of the teacher-target cache, its writer, the merge step, and the reader.

Layout of a cache folder (``care-pretrain targets --out CACHE``)::

    run.json                         settings every worker must share (teachers, shard size, world size)
    shards/shard-w000of002-00000.safetensors
                                     tensors of one chunk of one worker: "semantic" (M, D) float32,
                                     "acoustic" (sum of T50, F) float32, rows concatenated in id order
    index-w000of002.jsonl            one JSON line per chunk, appended only after its shard is durably
                                     on disk: items (id, path, row, offset, frames, ...) and skipped files
    done-w000of002.json              the worker's summary, written when it has finished its list
    index.json                       merged over all workers (``merge_index``): what the reader uses
    skipped.csv                      path,id,reason,detail for every file that gave no target

Why it is built this way: a chunk is a fixed slice of the worker's sorted list, so a killed run
resumes by skipping the chunks its index already lists and redoing the rest; the bytes it writes are
the ones an uninterrupted run would have written, so nothing is missing or duplicated.
Reading uses safetensors slices, so a trainer touches only the rows it asks for.

Reader contract (what ``pretrain/data.py`` builds on)::

    store = TargetStore(cache_dir)          # needs index.json (run the merge first)
    store.ids                               # sorted list of utterance ids
    len(store); "id" in store
    t = store.get(utt_id)                   # {"semantic": (D,) float32, "acoustic": (T50, F) float32}
    store.path(utt_id)                      # absolute audio path the targets were computed from
    store.text(utt_id)                      # the transcript behind the semantic target
    store.num_samples(utt_id)               # 16 kHz samples after resampling
    store.num_frames(utt_id)                # == care_frame_count(num_samples) == T50
    store.semantic_dim, store.acoustic_dim, store.settings (run.json)

Acoustic frame t covers 16 kHz samples [320 t, 320 t + 400) (see ``frames.care_frame_count``).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from care_core import atomic

INDEX_VERSION = 1
RUN_FILE = "run.json"
MERGED_INDEX = "index.json"
SKIPPED_CSV = "skipped.csv"
SHARD_DIR = "shards"
_WORKER_RE = re.compile(r"^index-(w\d+of\d+)\.jsonl$")


class TargetStoreError(ValueError):
    """A cache folder is incomplete, inconsistent, or asked for something it does not hold."""


def worker_tag(rank: int, world_size: int) -> str:
    if not (0 <= rank < world_size):
        raise ValueError(f"worker {rank}/{world_size}: rank must be in [0, {world_size})")
    return f"w{rank:03d}of{world_size:03d}"


@dataclass
class ShardItem:
    """Where one utterance's targets sit inside its shard, plus what they were computed from."""

    id: str
    path: str
    n_samples: int
    frames: int
    text: str
    orig_sample_rate: int
    orig_channels: int
    row: int = -1  # row in "semantic"
    offset: int = -1  # first row in "acoustic"


@dataclass
class SkippedItem:
    id: str
    path: str
    reason: str
    detail: str = ""


@dataclass
class ChunkRecord:
    """One line of a worker index: a finished chunk (its shard may be absent when every file was bad)."""

    chunk: int
    shard: Optional[str]
    items: List[ShardItem] = field(default_factory=list)
    skipped: List[SkippedItem] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "chunk": self.chunk,
                "shard": self.shard,
                "items": [vars(i) for i in self.items],
                "skipped": [vars(s) for s in self.skipped],
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, line: str) -> "ChunkRecord":
        d = json.loads(line)
        return cls(
            chunk=int(d["chunk"]),
            shard=d["shard"],
            items=[ShardItem(**i) for i in d["items"]],
            skipped=[SkippedItem(**s) for s in d["skipped"]],
        )


class WorkerIndex:
    """The append-only jsonl of one worker. Lines are appended only after their shard is on disk."""

    def __init__(self, cache_dir: Path, tag: str):
        self.cache_dir = Path(cache_dir)
        self.tag = tag
        self.path = self.cache_dir / f"index-{tag}.jsonl"

    def load(self) -> Dict[int, ChunkRecord]:
        """Finished chunks by number. A torn last line (killed mid-append) is dropped and the file repaired."""
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        records: Dict[int, ChunkRecord] = {}
        good: List[bytes] = []
        torn = False
        lines = raw.split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            is_last = i == len(lines) - 1  # no trailing newline: the append did not finish
            try:
                if is_last:
                    raise ValueError("unterminated line")
                rec = ChunkRecord.from_json(line.decode("utf-8"))
            except (ValueError, KeyError, TypeError) as err:
                if is_last:
                    torn = True
                    continue
                raise TargetStoreError(f"{self.path}: line {i + 1} is not a chunk record ({err})") from err
            records[rec.chunk] = rec
            good.append(line)
        if torn:
            atomic.write_bytes(self.path, b"".join(g + b"\n" for g in good))
        return records

    def append(self, record: ChunkRecord) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(record.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())


def shard_name(tag: str, chunk: int) -> str:
    return f"{SHARD_DIR}/shard-{tag}-{chunk:05d}.safetensors"


def write_shard(
    cache_dir: Path, tag: str, chunk: int, items: Sequence[ShardItem], semantic: Sequence[np.ndarray],
    acoustic: Sequence[np.ndarray],
) -> Optional[str]:
    """Write one chunk's tensors atomically; fills ``row``/``offset`` of ``items``. Returns the relative name."""
    from safetensors.numpy import save

    if not items:
        return None
    if not (len(items) == len(semantic) == len(acoustic)):
        raise ValueError(f"chunk {chunk}: {len(items)} items, {len(semantic)} semantic, {len(acoustic)} acoustic")
    offset = 0
    for row, (item, ac) in enumerate(zip(items, acoustic)):
        if ac.shape[0] != item.frames:
            raise ValueError(f"{item.path}: acoustic target has {ac.shape[0]} frames, expected {item.frames}")
        item.row, item.offset = row, offset
        offset += ac.shape[0]
    tensors = {
        "semantic": np.ascontiguousarray(np.stack(semantic).astype(np.float32)),
        "acoustic": np.ascontiguousarray(np.concatenate(acoustic, axis=0).astype(np.float32)),
    }
    name = shard_name(tag, chunk)
    atomic.write_bytes(Path(cache_dir) / name, save(tensors, metadata={"ids": json.dumps([i.id for i in items])}))
    return name


def worker_tags(cache_dir: Path) -> List[str]:
    return sorted(m.group(1) for p in Path(cache_dir).glob("index-*.jsonl") if (m := _WORKER_RE.match(p.name)))


def merge_index(cache_dir: Path | str, allow_partial: bool = False) -> Dict[str, Any]:
    """Build ``index.json`` and ``skipped.csv`` over every worker's jsonl. Returns a summary dict.

    Refuses (``TargetStoreError``) when a worker of the recorded world size has not finished, unless
    ``allow_partial``, and when an id appears twice (two runs with different settings in one folder).
    """
    cache_dir = Path(cache_dir)
    run_path = cache_dir / RUN_FILE
    if not run_path.exists():
        raise TargetStoreError(f"{cache_dir}: no {RUN_FILE}; this is not a target cache")
    settings = json.loads(run_path.read_text())
    world = int(settings["world_size"])
    expected = [worker_tag(r, world) for r in range(world)]
    unfinished = [t for t in expected if not (cache_dir / f"done-{t}.json").exists()]
    if unfinished and not allow_partial:
        raise TargetStoreError(
            f"{cache_dir}: workers not finished: {', '.join(unfinished)}; rerun them (they resume) before merging"
        )
    items: Dict[str, Dict[str, Any]] = {}
    skipped: List[SkippedItem] = []
    for tag in worker_tags(cache_dir):
        if tag not in expected:
            raise TargetStoreError(f"{cache_dir}: index-{tag}.jsonl does not belong to a {world}-worker run")
        for chunk, rec in sorted(WorkerIndex(cache_dir, tag).load().items()):
            for it in rec.items:
                if it.id in items:
                    raise TargetStoreError(f"{cache_dir}: id {it.id!r} stored twice ({items[it.id]['shard']}, {rec.shard})")
                entry = vars(it).copy()
                entry["shard"] = rec.shard
                items[it.id] = entry
            skipped.extend(rec.skipped)
    skipped.sort(key=lambda s: s.id)
    ordered = [items[k] for k in sorted(items)]
    reasons: Dict[str, int] = {}
    for s in skipped:
        key = s.reason.split(":")[0]
        reasons[key] = reasons.get(key, 0) + 1
    index = {
        "version": INDEX_VERSION,
        "settings": settings,
        "complete": not unfinished,
        "items": ordered,
        "num_skipped": len(skipped),
    }
    atomic.write_json(cache_dir / MERGED_INDEX, index)
    lines = [["path", "id", "reason", "detail"]] + [[s.path, s.id, s.reason, s.detail] for s in skipped]
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    atomic.write_bytes(cache_dir / SKIPPED_CSV, buf.getvalue().encode("utf-8"))
    return {"stored": len(ordered), "skipped": len(skipped), "skipped_by_reason": reasons, "complete": not unfinished}


class TargetStore:
    """Read-only view of a merged target cache. Safe to use from forked DataLoader workers."""

    def __init__(self, cache_dir: Path | str):
        self.cache_dir = Path(cache_dir)
        index_path = self.cache_dir / MERGED_INDEX
        if not index_path.exists():
            hint = " (worker indexes exist: run `care-pretrain targets --out CACHE --merge`)" if worker_tags(
                self.cache_dir
            ) else ""
            raise TargetStoreError(f"{index_path}: missing{hint}")
        index = json.loads(index_path.read_text())
        if index.get("version") != INDEX_VERSION:
            raise TargetStoreError(f"{index_path}: index version {index.get('version')}, expected {INDEX_VERSION}")
        self.settings: Dict[str, Any] = index["settings"]
        self.complete: bool = bool(index.get("complete", True))
        self._items: Dict[str, Dict[str, Any]] = {it["id"]: it for it in index["items"]}
        self.ids: List[str] = sorted(self._items)
        self.semantic_dim: int = int(self.settings.get("semantic_dim", 0))
        self.acoustic_dim: int = int(self.settings.get("acoustic_dim", 0))
        self._handles: Dict[str, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def _item(self, utt_id: str) -> Dict[str, Any]:
        try:
            return self._items[utt_id]
        except KeyError:
            raise TargetStoreError(f"{self.cache_dir}: no targets for id {utt_id!r}") from None

    def _open(self, shard: str):
        from safetensors import safe_open

        if os.getpid() != self._pid:  # forked: do not share file handles with the parent
            self._handles, self._pid = {}, os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            path = self.cache_dir / shard
            if not path.exists():
                raise TargetStoreError(f"{path}: shard listed in index.json is missing")
            handle = safe_open(str(path), framework="numpy")
            self._handles[shard] = handle
        return handle

    def get(self, utt_id: str) -> Dict[str, np.ndarray]:
        it = self._item(utt_id)
        f = self._open(it["shard"])
        semantic = f.get_slice("semantic")[it["row"] : it["row"] + 1][0]
        acoustic = f.get_slice("acoustic")[it["offset"] : it["offset"] + it["frames"]]
        return {"semantic": np.asarray(semantic, dtype=np.float32), "acoustic": np.asarray(acoustic, dtype=np.float32)}

    def path(self, utt_id: str) -> str:
        return self._item(utt_id)["path"]

    def text(self, utt_id: str) -> str:
        return self._item(utt_id)["text"]

    def num_samples(self, utt_id: str) -> int:
        return int(self._item(utt_id)["n_samples"])

    def num_frames(self, utt_id: str) -> int:
        return int(self._item(utt_id)["frames"])

    def meta(self, utt_id: str) -> Dict[str, Any]:
        return dict(self._item(utt_id))
