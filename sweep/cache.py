"""On-disk cache of per-layer time-mean features: the upstream runs once per utterance per sweep.

Why this is exact (the SUPERB probe: upstream frozen, Featurizer ``normalize=False``, mean pooling
over time before the head): the stock path
computes ``mean_t( sum_l softmax(w)_l · h_l[t] )`` over the frames s3prl's ``Featurizer.tolist``
keeps (``round(len(wav) / downsample_rate)``, cut at what the upstream produced); both sums are
linear, so this equals ``sum_l softmax(w)_l · mean_t(h_l[t])``. The cache stores ``mean_t(h_l)``
for every layer (L × D per utterance); every fold and seed then trains on L × D vectors.
With layer normalisation on (a per-frame non-linearity) or a trainable upstream it is not exact,
and the sweep runs the stock runner instead.

Layout: ``<root>/<upstream key>/<settings digest>/shard-<digest>.safetensors``. A shard holds
``means`` (N, L, D) float32, ``frames`` (N, 3) int64 (frames averaged, frames the upstream
produced alone, waveform samples: what `fast_probe` needs to replay the stock runner's padded
batches) and ``frame_var`` (N, L) float32 (per layer, the variance over the averaged frames summed
over dimensions: the within-utterance spread the degenerate-feature check compares against), and in
its metadata the utterance keys, the utterances the upstream failed on (with the error), and a
sha256 over the keys, the failures and the tensor bytes: two swapped keys would serve one utterance
the other's features, so the keys are checksummed with the data they index. Shards are
written whole (tmp + os.replace), so a killed extraction loses at most one shard of work and
resumes with the utterances not yet in any shard. A shard that does not load or whose checksum
does not match is moved to ``corrupt/``, reported, and its utterances are recomputed.

An utterance key is sha256(audio file bytes, segment, audio settings): the same file under two
tasks (IEMOCAP-4 and -6) is extracted once; an edited file is extracted again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from care_core import atomic
from care_core.atomic import atomic_path
from care_core.constants import SAMPLE_RATE
from sweep.cells import UpstreamSpec, sha256_file

FORMAT_VERSION = 2  # 2: frame_var, and the checksum covers the keys


class CacheError(ValueError):
    """A cache that cannot be used as asked (wrong shapes, missing utterances after extraction)."""


@dataclass(frozen=True)
class CacheConfig:
    """`shard_size`: utterances per shard, i.e. the most work a kill can lose.
    `max_seconds`/`min_seconds`: the task's audio crop/pad (datarc), part of every key."""

    shard_size: int = 256
    sample_rate: int = SAMPLE_RATE
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


def shard_digest(keys: Sequence[str], failed: Mapping[str, str], tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the utterance keys, the recorded failures and every tensor's bytes, in one order."""
    h = hashlib.sha256()
    h.update(json.dumps([list(keys), sorted(failed.items())]).encode())
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class Pooled:
    """One utterance through the upstream, reduced to what the cache keeps."""

    means: torch.Tensor  # (L, D) time-means over the frames the Featurizer keeps
    used: int  # frames averaged
    produced: int  # frames the upstream produced alone
    frame_var: torch.Tensor  # (L,) variance over those frames, summed over dimensions


def time_means(hidden_states: Sequence[torch.Tensor], n_samples: int, downsample_rate: int) -> Pooled:
    """Means over exactly the frames s3prl's ``Featurizer.tolist`` keeps for a batch of one.

    ``tolist`` keeps ``round(n_samples / rate)`` frames; slicing never goes past what the upstream
    produced, so an upstream that emits fewer frames (a WavLM-style conv gives 49 for 1 s, round
    gives 50) is averaged over all of its frames.
    """
    keep = round(n_samples / downsample_rate)
    stacked = torch.stack([h[0] for h in hidden_states], dim=0)  # (L, T, D)
    n = min(keep, stacked.shape[1])
    if n < 1:
        raise ValueError(f"upstream produced {stacked.shape[1]} frames for {n_samples} samples")
    used = stacked[:, :n].float()
    return Pooled(used.mean(dim=1), n, int(stacked.shape[1]), used.var(dim=1, unbiased=False).sum(dim=-1))


@dataclass
class _Row(Pooled):
    samples: int = 0  # waveform samples, for the padded-batch replay


@dataclass(frozen=True)
class Spread:
    """How much pooled features differ across utterances, per layer, against how much frames differ
    within an utterance. Per-utterance normalised frames (s3prl's fbank and mfcc) have a time-mean of
    zero for every utterance: `between` is ~0 while `within` is not, and a mean-pooling probe can
    then learn nothing but the class prior."""

    between: List[float]  # per layer: variance across utterances of the time-means, summed over dims
    within: List[float]  # per layer: mean over utterances of `Pooled.frame_var`
    n: int  # utterances

    @property
    def ratio(self) -> float:
        """The largest between/within ratio over layers (the probe may pick any layer); inf when there
        are fewer than two utterances to compare."""
        if not self.between:
            return math.inf
        return max((b / w if w > 0 else (math.inf if b > 0 else 0.0)) for b, w in zip(self.between, self.within))


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
        """(keys, failed, means, frames, frame_var), or raise ValueError saying why the shard is not
        trustworthy. Every read verifies the checksum, keys included."""
        from safetensors import safe_open

        try:
            with safe_open(str(shard), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in ("means", "frames", "frame_var")}
        except Exception as e:
            raise ValueError(f"unreadable ({type(e).__name__}: {e})") from None
        try:
            keys = json.loads(meta["keys"])
            failed = json.loads(meta.get("failed", "{}"))
            digest = meta["sha256"]
        except (KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"bad metadata ({e})") from None
        if not (isinstance(keys, list) and isinstance(failed, dict)):
            raise ValueError("bad metadata (keys must be a list, failed an object)")
        means, frames, frame_var = tensors["means"], tensors["frames"], tensors["frame_var"]
        if (means.dim() != 3 or means.shape[0] != len(keys) or frames.shape != (len(keys), 3)
                or frame_var.shape != means.shape[:2]):
            raise ValueError(f"shapes {tuple(means.shape)} / {tuple(frames.shape)} / {tuple(frame_var.shape)} "
                             f"for {len(keys)} keys")
        if shard_digest(keys, failed, tensors) != digest:
            raise ValueError("checksum mismatch (tensors, keys or failures changed since the shard was written)")
        if not (torch.isfinite(means).all() and torch.isfinite(frame_var).all()):
            raise ValueError("non-finite values")
        return keys, failed, means, frames, frame_var

    def index(self, report: Optional[ExtractReport] = None) -> Tuple[Dict[str, Tuple[Path, int]], Dict[str, str]]:
        """key -> (shard, row) for every trustworthy entry, and key -> error for recorded failures."""
        where: Dict[str, Tuple[Path, int]] = {}
        failed: Dict[str, str] = {}
        for shard in self._shards():
            try:
                keys, fails, *_ = self._read_shard(shard)
            except ValueError as e:
                self._quarantine(shard, str(e), report)
                continue
            for i, k in enumerate(keys):
                where[k] = (shard, i)
            failed.update(fails)
        for k in where:
            failed.pop(k, None)
        return where, failed

    def _write_shard(self, keys: List[str], pooled: List[Pooled], failed: Mapping[str, str]) -> Path:
        from safetensors.torch import save_file

        if pooled:
            tensors = {"means": torch.stack([p.means for p in pooled]).float().contiguous(),
                       "frame_var": torch.stack([p.frame_var for p in pooled]).float().contiguous()}
        else:
            tensors = {"means": torch.zeros((0, 0, 0)), "frame_var": torch.zeros((0, 0))}
        tensors["frames"] = torch.tensor([[p.used, p.produced, p.samples] for p in pooled],
                                         dtype=torch.int64).reshape(len(pooled), 3)
        meta = {"keys": json.dumps(keys), "failed": json.dumps(dict(failed)),
                "sha256": shard_digest(keys, failed, tensors),
                "settings": json.dumps(self.settings), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        name = hashlib.sha256(json.dumps([keys, sorted(failed)]).encode()).hexdigest()[:16]
        path = self.dir / f"shard-{name}.safetensors"
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    # ------------------------------------------------------------ extraction
    def extract(self, utts: Sequence[UttRef], featurize: Callable[[torch.Tensor], Pooled],
                load: Callable[[UttRef], torch.Tensor]) -> ExtractReport:
        """Make sure every utterance is cached (or recorded as failed). Resumable; idempotent.

        `load(utt)` returns the 1-D 16 kHz waveform exactly as the stock dataset gives it;
        `featurize(wav)` returns its `Pooled` features (`time_means`).
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
        pooled: List[Pooled] = []
        fails: Dict[str, str] = {}
        last = time.time()
        shape = None
        for i, (k, u) in enumerate(todo):
            try:
                wav = load(u)
                p = featurize(wav)
                if not (torch.isfinite(p.means).all() and torch.isfinite(p.frame_var).all()):
                    raise ValueError("non-finite features")
                if shape is None:
                    shape = tuple(p.means.shape)
                elif tuple(p.means.shape) != shape:
                    raise ValueError(f"feature shape {tuple(p.means.shape)} differs from {shape}")
                keys.append(k)
                pooled.append(_Row(p.means.detach().cpu().float(), int(p.used), int(p.produced),
                                   p.frame_var.detach().cpu().float(), int(wav.numel())))
                report.extracted += 1
            except Exception as e:  # one bad file must not stop a corpus; it is reported and skipped
                err = f"{type(e).__name__}: {e}"
                fails[k] = err
                report.failed[u.id] = err
                self.log(f"cache: upstream {self.upstream.key} failed on {u.id} ({u.path}): {err}")
            if len(keys) + len(fails) >= self.cfg.shard_size:
                self._write_shard(keys, pooled, fails)
                keys, pooled, fails = [], [], {}
            if time.time() - last > self.cfg.progress_every_s:
                last = time.time()
                rate = (i + 1) / (last - t0)
                self.log(f"cache {self.upstream.key}: {i + 1}/{len(todo)} utterances, "
                         f"{(len(todo) - i - 1) / max(rate, 1e-9):.0f} s left")
        if keys or fails:
            self._write_shard(keys, pooled, fails)
        report.seconds = time.time() - t0
        return report

    def load(self, utts: Sequence[UttRef], with_frames: bool = False):
        """id -> (L, D) float32 for every cached utterance, and id -> error for failed ones
        (with `with_frames`, also id -> (frames averaged, frames produced, samples)).

        Every shard read is verified (checksum over keys and tensors): a shard that fails is moved
        aside and raises CacheError naming it, as does an utterance neither cached nor failed (training
        on a silently shrunken split would give a wrong table)."""
        report = ExtractReport()
        where, failed = self.index(report)
        if report.corrupt_shards:
            raise CacheError(f"{report.corrupt_shards[0]}; the shard was moved to {self.dir / 'corrupt'} and its "
                             "utterances are extracted again when the sweep runs next")
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
                    loaded[shard] = self._read_shard(shard)[2:4]
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

    def spread(self, utts: Sequence[UttRef]) -> Spread:
        """`Spread` of the cached utterances among `utts`, one shard in memory at a time."""
        wanted = {self.key(u) for u in utts}
        self.memo.save()
        where, _ = self.index()
        shards = sorted({where[k][0] for k in wanted if k in where})
        n, s1, s2, within = 0, None, None, None
        for shard in shards:
            keys, _, means, _, frame_var = self._read_shard(shard)
            rows = [i for i, k in enumerate(keys) if k in wanted]
            m = means[rows].double()
            if s1 is None:
                s1, s2, within = torch.zeros(m.shape[1:], dtype=torch.float64), torch.zeros(
                    m.shape[1:], dtype=torch.float64), torch.zeros(m.shape[1], dtype=torch.float64)
            n += len(rows)
            s1 += m.sum(0)
            s2 += (m * m).sum(0)
            within += frame_var[rows].double().sum(0)
        if n < 2:
            return Spread([], [], n)
        mean = s1 / n
        between = ((s2 / n - mean * mean).clamp_min(0) * n / (n - 1)).sum(-1)
        return Spread(between.tolist(), (within / n).tolist(), n)
