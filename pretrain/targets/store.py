"""On-disk layout of the teacher-target cache, its writer, the merge step, and the reader.

Layout of a cache folder (``care-pretrain targets --out CACHE``)::

    run.json                         settings every worker must share (teachers, shard size, world size)
    shards/shard-w000of002-00000.safetensors
                                     tensors of one chunk of one worker: "semantic" (M, D) float32,
                                     "acoustic" (sum of T50, F) float32, rows concatenated in id order
    index-w000of002.jsonl            one JSON line per chunk, appended only after its shard is durably
                                     on disk: the shard's sha256, items (id, path, row, offset, frames,
                                     ...) and skipped files
    done-w000of002.json              the worker's summary, written when it has finished its list
    index.json                       merged over all workers (``merge_index``): what the reader uses
    skipped.csv                      path,id,reason,detail for every file that gave no target

Why it is built this way: a chunk is a fixed slice of the worker's sorted list, so a killed run
resumes by skipping the chunks its index already lists and redoing the rest; the bytes it writes are
the ones an uninterrupted run would have written, so nothing is missing or duplicated.
Reading uses safetensors slices, so a trainer touches only the rows it asks for.

Every shard is checked before its first read, in every process that opens it: the sha256 of the
whole file (tensor bytes, tensor names and the ``ids`` metadata) must equal the one recorded when it
was written, and its ``ids`` must be the ids the index places in it, row for row. Overwritten bytes
or two swapped keys would otherwise come back as plausible finite targets of the wrong utterance.
A resumed run checks its finished shards the same way and recomputes a chunk whose shard is bad.

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
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from care_core import atomic

INDEX_VERSION = 2  # 2: shards carry a sha256
RUN_FILE = "run.json"
MERGED_INDEX = "index.json"
SKIPPED_CSV = "skipped.csv"
SHARD_DIR = "shards"
_WORKER_RE = re.compile(r"^index-(w\d+of\d+)\.jsonl$")


class TargetStoreError(ValueError):
    """A cache folder is incomplete, inconsistent, or asked for something it does not hold."""


def read_json_object(path: Path, what: str) -> Dict[str, Any]:
    """A cache JSON file that must hold an object; anything else is a sentence naming the file."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TargetStoreError(f"{path}: {what} is unreadable ({err}); use a new --out") from None
    if not isinstance(obj, dict):
        raise TargetStoreError(f"{path}: {what} holds a JSON {type(obj).__name__}, not an object; use a new --out")
    return obj


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def verify_shard(cache_dir: Path, shard: str, sha256: Optional[str], ids: Sequence[str]) -> None:
    """Raise `TargetStoreError` naming the shard unless its bytes hash to ``sha256`` and its ``ids``
    metadata lists ``ids`` in row order."""
    from safetensors import safe_open

    path = Path(cache_dir) / shard
    if not sha256:
        raise TargetStoreError(f"{path}: no checksum recorded for this shard (a cache from before shard checksums); "
                               f"extract the targets again into a new --out")
    if not path.is_file():
        raise TargetStoreError(f"{path}: shard listed in the index is missing")
    if file_sha256(path) != sha256:
        raise TargetStoreError(f"{path}: shard bytes do not match the checksum recorded when it was written "
                               f"(overwritten or damaged); delete the cache and extract again")
    try:
        with safe_open(str(path), framework="numpy") as f:
            stored = json.loads((f.metadata() or {}).get("ids", "null"))
    except Exception as err:  # the checksum matched, so only a writer bug gets here
        raise TargetStoreError(f"{path}: unreadable shard ({err})") from None
    if stored != list(ids):
        raise TargetStoreError(f"{path}: the shard's ids differ from the ones the index places in it")


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
    sha256: Optional[str] = None  # of the shard file; None only for a chunk without shard

    def to_json(self) -> str:
        return json.dumps(
            {
                "chunk": self.chunk,
                "shard": self.shard,
                "sha256": self.sha256,
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
            sha256=d.get("sha256"),
        )

    def verify(self, cache_dir: Path) -> None:
        if self.shard is not None:
            verify_shard(cache_dir, self.shard, self.sha256, [i.id for i in sorted(self.items, key=lambda i: i.row)])


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
) -> Tuple[Optional[str], Optional[str]]:
    """Write one chunk's tensors atomically; fills ``row``/``offset`` of ``items``.
    Returns the relative name and the sha256 of the bytes written (None, None for an empty chunk)."""
    from safetensors.numpy import save

    if not items:
        return None, None
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
    data = save(tensors, metadata={"ids": json.dumps([i.id for i in items])})
    atomic.write_bytes(Path(cache_dir) / name, data)
    return name, hashlib.sha256(data).hexdigest()


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
    settings = read_json_object(run_path, "the settings file of a target cache")
    try:
        world = int(settings["world_size"])
    except (KeyError, TypeError, ValueError):
        raise TargetStoreError(f"{run_path}: no valid world_size; this is not a target cache") from None
    expected = [worker_tag(r, world) for r in range(world)]
    unfinished = [t for t in expected if not (cache_dir / f"done-{t}.json").exists()]
    if unfinished and not allow_partial:
        raise TargetStoreError(
            f"{cache_dir}: workers not finished: {', '.join(unfinished)}; rerun them (they resume) before merging"
        )
    items: Dict[str, Dict[str, Any]] = {}
    shards: Dict[str, str] = {}
    skipped: List[SkippedItem] = []
    for tag in worker_tags(cache_dir):
        if tag not in expected:
            raise TargetStoreError(f"{cache_dir}: index-{tag}.jsonl does not belong to a {world}-worker run")
        for chunk, rec in sorted(WorkerIndex(cache_dir, tag).load().items()):
            if rec.shard is not None:
                if not rec.sha256:
                    raise TargetStoreError(f"{cache_dir / rec.shard}: no checksum recorded for this shard (a cache "
                                           f"from before shard checksums); extract the targets again into a new --out")
                if not (cache_dir / rec.shard).is_file():
                    raise TargetStoreError(f"{cache_dir / rec.shard}: shard listed in index-{tag}.jsonl is missing; "
                                           f"rerun that worker (it recomputes the chunk)")
                shards[rec.shard] = rec.sha256
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
        "shards": shards,
        "num_skipped": len(skipped),
    }
    atomic.write_json(cache_dir / MERGED_INDEX, index)
    lines = [["path", "id", "reason", "detail"]] + [[s.path, s.id, s.reason, s.detail] for s in skipped]
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    atomic.write_bytes(cache_dir / SKIPPED_CSV, buf.getvalue().encode("utf-8", "surrogateescape"))
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
        index = read_json_object(index_path, "the merged index of a target cache")
        if index.get("version") != INDEX_VERSION:
            hint = " (made before shard checksums: extract the targets again)" if index.get("version") == 1 else ""
            raise TargetStoreError(f"{index_path}: index version {index.get('version')}, expected {INDEX_VERSION}{hint}")
        try:
            self.settings: Dict[str, Any] = dict(index["settings"])
            self.complete: bool = bool(index.get("complete", True))
            self._items: Dict[str, Dict[str, Any]] = {it["id"]: it for it in index["items"]}
            self._shard_sha: Dict[str, str] = dict(index["shards"])
            self._shard_ids: Dict[str, List[str]] = {}
            for it in sorted(self._items.values(), key=lambda i: (i["shard"], i["row"])):
                self._shard_ids.setdefault(it["shard"], []).append(it["id"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise TargetStoreError(f"{index_path}: not a merged target index ({type(err).__name__}: {err})") from None
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
            self.verify(shard)
            handle = safe_open(str(self.cache_dir / shard), framework="numpy")
            self._handles[shard] = handle
        return handle

    def verify(self, shard: Optional[str] = None) -> None:
        """Check one shard (or every shard) against its recorded sha256 and ids; `get` does it before
        the first read of each shard in each process."""
        for name in [shard] if shard is not None else sorted(self._shard_ids):
            verify_shard(self.cache_dir, name, self._shard_sha.get(name), self._shard_ids.get(name, []))

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
