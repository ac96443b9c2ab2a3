"""On-disk cache of per-layer time-mean features: the upstream runs once per utterance per sweep.

Why this is exact (SPEC §4 probe, upstream frozen, Featurizer ``normalize=False``): the stock path
computes ``mean_t( sum_l softmax(w)_l · h_l[t] )`` over the frames s3prl's ``Featurizer.tolist``
keeps (``round(len(wav) / downsample_rate)``, cut at what the upstream produced); both sums are
linear, so this equals ``sum_l softmax(w)_l · mean_t(h_l[t])``. The cache stores ``mean_t(h_l)``
for every layer (L × D per utterance); every fold and seed then trains on L × D vectors.
With layer normalisation on (a per-frame non-linearity) or a trainable upstream it is not exact,
and the sweep runs the stock runner instead.

Layout: ``<root>/<upstream key>/<settings digest>/shard-<digest>.safetensors``. A shard holds
``means`` (N, L, D) float32 and ``frames`` (N, 3) int64 (frames averaged, frames the upstream
produced alone, waveform samples: what `fast_probe` needs to replay the stock runner's padded
batches), and in its metadata the utterance keys, the
utterances the upstream failed on (with the error), and a sha256 of the tensor bytes. Shards are
written whole (tmp + os.replace), so a killed extraction loses at most one shard of work and
resumes with the utterances not yet in any shard. A shard that does not load or whose checksum
does not match is moved to ``corrupt/``, reported, and its utterances are recomputed.

An utterance key is sha256(audio file bytes, segment, audio settings): the same file under two
tasks (IEMOCAP-4 and -6) is extracted once; an edited file is extracted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from care_core import atomic
from care_core.atomic import atomic_path
from sweep.cells import UpstreamSpec, sha256_file

FORMAT_VERSION = 1


class CacheError(ValueError):
    """A cache that cannot be used as asked (wrong shapes, missing utterances after extraction)."""


@dataclass(frozen=True)
class CacheConfig:
    """`shard_size`: utterances per shard, i.e. the most work a kill can lose.
    `max_seconds`/`min_seconds`: the audio crop/pad of SPEC §4, part of every key."""

    shard_size: int = 256
    sample_rate: int = 16000
    max_seconds: Optional[float] = 30.0
    min_seconds: Optional[float] = 1.0
    retry_failed: bool = True
    progress_every_s: float = 10.0


@dataclass(frozen=True)
class UttRef:
    """What the cache needs to know about one utterance (a manifest row reduced to its audio)."""

    id: str
    path: str
    segments: Optional[Tuple[Tuple[float, float], ...]] = None  # manifest `segments`; None = whole file

    def __post_init__(self):
        if self.segments is not None:
            object.__setattr__(self, "segments", tuple(tuple(float(x) for x in s) for s in self.segments))


@dataclass
class ExtractReport:
    extracted: int = 0
    reused: int = 0
    failed: Dict[str, str] = field(default_factory=dict)  # utterance id -> error
    corrupt_shards: List[str] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> List[str]:
        out = [f"cache: {self.extracted} extracted, {self.reused} reused, {len(self.failed)} failed "
               f"in {self.seconds:.1f} s"]
        out += [f"cache: corrupt shard moved aside and recomputed: {s}" for s in self.corrupt_shards]
        out += [f"cache: upstream failed on {i}: {e}" for i, e in sorted(self.failed.items())]
        return out


class FileHashMemo:
    """sha256 of audio files, remembered by (path, size, mtime_ns) so a resumed sweep does not re-read
    every file; any change of size or mtime re-hashes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data: Dict[str, list] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except json.JSONDecodeError:
                self.data = {}  # a memo only saves time; a broken one is rebuilt
        self.dirty = False

    def get(self, file: str) -> str:
        st = os.stat(file)
        rec = self.data.get(file)
        if rec and rec[0] == st.st_size and rec[1] == st.st_mtime_ns:
            return rec[2]
        digest = sha256_file(file)
        self.data[file] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if self.dirty:
            atomic.write_json(self.path, self.data)
            self.dirty = False


def _tensor_digest(means: torch.Tensor, frames: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(means.contiguous().numpy().tobytes())
    h.update(frames.contiguous().numpy().tobytes())
    return h.hexdigest()


def time_means(hidden_states: Sequence[torch.Tensor], n_samples: int, downsample_rate: int) -> Tuple[torch.Tensor, int, int]:
    """(L, D) means over exactly the frames s3prl's ``Featurizer.tolist`` keeps for a batch of one.

    ``tolist`` keeps ``round(n_samples / rate)`` frames; slicing never goes past what the upstream
    produced, so an upstream that emits fewer frames (a WavLM-style conv gives 49 for 1 s, round
    gives 50) is averaged over all of its frames. Returns (means, frames averaged, frames produced).
    """
    keep = round(n_samples / downsample_rate)
    stacked = torch.stack([h[0] for h in hidden_states], dim=0)  # (L, T, D)
    n = min(keep, stacked.shape[1])
    if n < 1:
        raise ValueError(f"upstream produced {stacked.shape[1]} frames for {n_samples} samples")
    return stacked[:, :n].float().mean(dim=1), n, int(stacked.shape[1])


class FeatureCache:
    def __init__(self, root: os.PathLike, upstream: UpstreamSpec, cfg: CacheConfig = CacheConfig(),
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)):
        self.cfg = cfg
        self.upstream = upstream
        settings = {"format": FORMAT_VERSION, "hub": upstream.hub, "ckpt_sha256": upstream.ckpt_sha256,
                    "sample_rate": int(cfg.sample_rate),
                    # 30 and 30.0 must name the same cache: settings are normalised before hashing
                    "max_seconds": None if cfg.max_seconds is None else float(cfg.max_seconds),
                    "min_seconds": None if cfg.min_seconds is None else float(cfg.min_seconds)}
        self.settings = settings
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self.dir = Path(root) / upstream.key / digest
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.dir / "settings.json", settings)
        self.memo = FileHashMemo(Path(root) / "file_hashes.json")
        self.log = log

    # ------------------------------------------------------------------ keys
    def key(self, utt: UttRef) -> str:
        if not os.path.isfile(utt.path):
            raise FileNotFoundError(f"{utt.path}: audio file of utterance {utt.id} not found")
        audio = self.memo.get(utt.path)
        text = json.dumps([audio, utt.segments], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    # ---------------------------------------------------------------- shards
    def _shards(self) -> List[Path]:
        return sorted(self.dir.glob("shard-*.safetensors"))

    def _quarantine(self, shard: Path, reason: str, report: Optional[ExtractReport]) -> None:
        bad = self.dir / "corrupt"
        bad.mkdir(exist_ok=True)
        try:
            os.replace(shard, bad / shard.name)
        except FileNotFoundError:  # another worker moved it first
            pass
        msg = f"{shard}: {reason}"
        self.log(f"cache: corrupt shard moved to {bad / shard.name} ({reason}); its utterances will be recomputed")
        if report is not None:
            report.corrupt_shards.append(msg)

    def _read_shard(self, shard: Path):
        """(keys, failed, means, frames), or raise ValueError saying why the shard is not trustworthy."""
        from safetensors import safe_open

        try:
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
                means = f.get_tensor("means")
                frames = f.get_tensor("frames")
        except Exception as e:
            raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
        try:
            keys = json.loads(meta["keys"])
            failed = json.loads(meta.get("failed", "{}"))
            digest = meta["sha256"]
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"bad metadata ({e})") from None
        if means.dim() != 3 or means.shape[0] != len(keys) or frames.shape != (len(keys), 3):
            raise ValueError(f"shapes {tuple(means.shape)} / {tuple(frames.shape)} for {len(keys)} keys")
        if _tensor_digest(means, frames) != digest:
            raise ValueError("checksum mismatch")
        if not torch.isfinite(means).all():
            raise ValueError("non-finite values")
        return keys, failed, means, frames

    def index(self, report: Optional[ExtractReport] = None) -> Tuple[Dict[str, Tuple[Path, int]], Dict[str, str]]:
        """key -> (shard, row) for every trustworthy entry, and key -> error for recorded failures."""
        where: Dict[str, Tuple[Path, int]] = {}
        failed: Dict[str, str] = {}
        for shard in self._shards():
            try:
                keys, fails, _, _ = self._read_shard(shard)
            except ValueError as e:
                self._quarantine(shard, str(e), report)
                continue
            for i, k in enumerate(keys):
                where[k] = (shard, i)
            failed.update(fails)
        for k in where:
            failed.pop(k, None)
        return where, failed

    def _write_shard(self, keys: List[str], means: List[torch.Tensor], frames: List[Tuple[int, int, int]],
                     failed: Mapping[str, str]) -> Path:
        from safetensors.torch import save_file

        if means:
            m = torch.stack(means).float().contiguous()
        else:
            m = torch.zeros((0, 0, 0), dtype=torch.float32)
        fr = torch.tensor(frames, dtype=torch.int64).reshape(len(frames), 3)
        meta = {"keys": json.dumps(keys), "failed": json.dumps(dict(failed)), "sha256": _tensor_digest(m, fr),
                "settings": json.dumps(self.settings), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        name = hashlib.sha256(json.dumps([keys, sorted(failed)]).encode()).hexdigest()[:16]
        path = self.dir / f"shard-{name}.safetensors"
        with atomic_path(path) as tmp:
            save_file({"means": m, "frames": fr}, str(tmp), metadata=meta)
        return path

    # ------------------------------------------------------------ extraction
    def extract(self, utts: Sequence[UttRef], featurize: Callable[[torch.Tensor], Tuple[torch.Tensor, int, int]],
                load: Callable[[UttRef], torch.Tensor]) -> ExtractReport:
        """Make sure every utterance is cached (or recorded as failed). Resumable; idempotent.

        `load(utt)` returns the 1-D 16 kHz waveform exactly as the stock dataset gives it;
        `featurize(wav)` returns the (L, D) time-means, frames averaged and frames produced (`time_means`).
        An exception from either for one utterance is recorded as that utterance's failure.
        """
        t0 = time.time()
        report = ExtractReport()
        where, failed = self.index(report)
        todo: List[Tuple[str, UttRef]] = []
        seen = set()
        for u in utts:
            k = self.key(u)
            if k in seen:
                continue
            seen.add(k)
            if k in where:
                report.reused += 1
            elif k in failed and not self.cfg.retry_failed:
                report.failed[u.id] = failed[k]
            else:
                todo.append((k, u))
        self.memo.save()
        keys: List[str] = []
        means: List[torch.Tensor] = []
        frames: List[Tuple[int, int, int]] = []
        fails: Dict[str, str] = {}
        last = time.time()
        shape = None
        for i, (k, u) in enumerate(todo):
            try:
                wav = load(u)
                m, n, produced = featurize(wav)
                if not torch.isfinite(m).all():
                    raise ValueError("non-finite features")
                if shape is None:
                    shape = tuple(m.shape)
                elif tuple(m.shape) != shape:
                    raise ValueError(f"feature shape {tuple(m.shape)} differs from {shape}")
                keys.append(k)
                means.append(m.detach().cpu().float())
                frames.append((int(n), int(produced), int(wav.numel())))
                report.extracted += 1
            except Exception as e:  # one bad file must not stop a corpus; it is reported and skipped
                err = f"{type(e).__name__}: {e}"
                fails[k] = err
                report.failed[u.id] = err
                self.log(f"cache: upstream {self.upstream.key} failed on {u.id} ({u.path}): {err}")
            if len(keys) + len(fails) >= self.cfg.shard_size:
                self._write_shard(keys, means, frames, fails)
                keys, means, frames, fails = [], [], [], {}
            if time.time() - last > self.cfg.progress_every_s:
                last = time.time()
                rate = (i + 1) / (last - t0)
                self.log(f"cache {self.upstream.key}: {i + 1}/{len(todo)} utterances, "
                         f"{(len(todo) - i - 1) / max(rate, 1e-9):.0f} s left")
        if keys or fails:
            self._write_shard(keys, means, frames, fails)
        report.seconds = time.time() - t0
        return report

    def load(self, utts: Sequence[UttRef], with_frames: bool = False):
        """id -> (L, D) float32 for every cached utterance, and id -> error for failed ones
        (with `with_frames`, also id -> (frames averaged, frames produced, samples)).

        An utterance neither cached nor failed raises CacheError: training on a silently shrunken
        split would give a wrong table."""
        where, failed = self.index()
        keys = {u.id: self.key(u) for u in utts}
        self.memo.save()
        out: Dict[str, torch.Tensor] = {}
        errors: Dict[str, str] = {}
        frames: Dict[str, Tuple[int, int, int]] = {}
        loaded: Dict[Path, tuple] = {}
        missing = []
        for uid, k in keys.items():
            if k in where:
                shard, row = where[k]
                if shard not in loaded:
                    loaded[shard] = self._read_shard(shard)[2:]
                out[uid] = loaded[shard][0][row]
                frames[uid] = tuple(int(x) for x in loaded[shard][1][row])
            elif k in failed:
                errors[uid] = failed[k]
            else:
                missing.append(uid)
        if missing:
            raise CacheError(f"{self.dir}: {len(missing)} utterance(s) not cached, e.g. {missing[:3]}; "
                             "run the extraction first")
        return (out, errors, frames) if with_frames else (out, errors)
