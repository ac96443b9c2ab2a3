"""`care-superb sweep`: every (task, fold, seed, upstream) cell, resumable, in parallel, with a table.

    care-superb sweep --tasks emotion_cafe emotion_emodb --upstreams care:<ckpt> wavlm hubert \\
        --seeds 5 --out runs/ [--jobs 4] [--data data/] [--folds fold1 fold2] [--stock] \\
        [--reference care] [--allow-degenerate]

An upstream may carry a name for the table: ``--upstreams init=care:<folder> trained=care:<folder>``.

Three steps. (1) Plan: check the input (tasks, upstream names, checkpoints, overrides), list the
cells, skip finished ones. (2) Extract: for each upstream and corpus, the upstream runs once per
utterance and its per-layer time-means are stored (`sweep.cache`); an upstream whose pooled features
are the same for every utterance is refused here (see `degenerate_message`). (3) Cells: the probe
trains on the cache with the stock expert and the stock loop replayed (`sweep.fast_probe`), one
results.json per cell. With ``--featurizer-normalize``, ``--upstream-trainable`` or ``--stock``
every cell runs ``run_downstream.py -m train`` then ``-m evaluate`` instead, and the sweep says why.

A cell is finished when its results.json says so (written atomically at the very end), so a killed
sweep simply starts again and skips finished cells; a cell whose config changed is run again.
The seed of a cell sets both s3prl's ``--seed`` (head init) and ``datarc.seed`` (the expert's
shuffle order), so seeds differ in both.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from care_core import atomic
from sweep.cache import UttRef
from sweep.cells import (
    CARE_HUBS,
    PLAN_NAME,
    SCHEMA_VERSION,
    Cell,
    ConfigError,
    UpstreamSpec,
    config_digest,
    expand_cells,
    is_done,
    read_results,
    software_versions,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPDIR_NAME = "s3prl"  # the s3prl experiment folder inside a cell (the expert writes its own results.json)
# Pooled features whose spread across utterances is below this fraction of the spread of frames
# within an utterance are "the same for every utterance". Measured on the demo corpus (130 CaFE-layout
# utterances, `Spread.ratio`): s3prl's fbank 2.0e-14 and mfcc 3.9e-15 (their means are float round-off);
# eGeMAPS 0.10, raw eGeMAPS 0.029, a random tiny CARE 0.016. The threshold sits far from both.
DEGENERATE_RATIO = 1e-6


@dataclass
class SweepConfig:
    tasks: List[str]
    upstreams: List[str]
    seeds: int = 5
    seed_base: int = 0
    folds: Optional[List[str]] = None
    out: str = "runs"
    data: Optional[str] = None
    cache: Optional[str] = None
    jobs: int = 1
    devices: Optional[List[str]] = None
    stock: bool = False
    featurizer_normalize: bool = False
    upstream_trainable: bool = False
    pad_mode: str = "auto"
    overrides: List[str] = field(default_factory=list)
    reference: Optional[str] = None  # the upstream the others are tested against (default: the first)
    allow_degenerate: bool = False
    table: bool = True
    plots: bool = True


@dataclass
class ExtractJob:
    """One upstream over the utterances of one corpus (all its tasks' manifests), into the cache."""

    upstream: UpstreamSpec
    corpus: str
    tasks: List[str]
    utts: List[UttRef]
    cache_root: str
    overrides: List[str]
    max_seconds: Optional[float]
    min_seconds: Optional[float]
    device: str


@dataclass
class ExtractResult:
    upstream: str  # key
    corpus: str
    tasks: List[str]
    extracted: int
    reused: int
    failed: Dict[str, str]
    corrupt_shards: List[str]
    padding_exact: bool
    spread_ratio: float
    n_utterances: int
    seconds: float


@dataclass
class CellJob:
    """Everything one worker needs to run one cell, fast or stock."""

    cell: Cell
    task_kind: str
    out: str
    path: str  # "fast" | "stock"
    stock_reason: Optional[str]
    config: Dict[str, Any]
    config_hash: str
    overrides: List[str]
    device: str
    cache_root: str
    manifest_dir: str
    manifest_mtime: int
    max_seconds: Optional[float]
    min_seconds: Optional[float]
    normalize: bool
    trainable: bool
    pad_mode: str = "alone"  # fast path only; set from the upstream once it has been built
    degenerate: Optional[Dict[str, Any]] = None  # set when --allow-degenerate let a refused upstream run


@dataclass
class CellResult:
    name: str
    status: str
    error: Optional[str]
    error_kind: Optional[str]  # "config": fix the input; "runtime": running again may help
    wall_s: float


# ------------------------------------------------------------------------------------ helpers
def _log(msg: str) -> None:
    print(f"[sweep] {msg}", file=sys.stderr, flush=True)


def task_config(task: str) -> Dict[str, Any]:
    import yaml

    from care_superb.launcher import default_config

    path = default_config(task)
    if path is None:
        raise ConfigError(f"task {task!r}: no config.yaml found (neither downstream_tasks/{task}/ nor s3prl)")
    with open(path) as f:
        return {"path": str(path), "config": yaml.safe_load(f)}


def manifest_dir(task: str, cfg: SweepConfig) -> Path:
    if cfg.data:
        return Path(cfg.data) / task
    datarc = task_config(task)["config"]["downstream_expert"]["datarc"]
    return Path(datarc["manifest_dir"])


def task_folds(task: str, cfg: SweepConfig) -> List[str]:
    from downstream_tasks.manifest import read_manifest

    mdir = manifest_dir(task, cfg)
    if not (mdir / "manifest.csv").is_file() and not mdir.is_file():
        raise ConfigError(f"task {task}: no manifest at {mdir} (run `care-superb prepare {task}` or pass --data)")
    names = read_manifest(mdir).fold_names
    if cfg.folds:
        bad = [f for f in cfg.folds if f not in names]
        if bad:
            raise ConfigError(f"task {task}: fold(s) {bad} not in its manifest (has {names})")
        return [f for f in names if f in cfg.folds]
    return names


def cell_overrides(cell: Cell, cfg: SweepConfig) -> List[str]:
    ov = [f"config.downstream_expert.datarc.test_fold='{cell.fold}'",
          f"config.downstream_expert.datarc.seed={cell.seed}"]
    if cfg.data:
        ov.append(f"config.downstream_expert.datarc.manifest_dir='{Path(cfg.data).resolve() / cell.task}'")
    return ov + list(cfg.overrides)


def choose_path(cfg: SweepConfig) -> Tuple[str, Optional[str]]:
    """("fast" | "stock", why stock)."""
    if cfg.stock:
        return "stock", "--stock was given"
    if cfg.featurizer_normalize:
        return "stock", "Featurizer layer norm is on: a per-frame non-linearity does not commute with the time mean"
    if cfg.upstream_trainable:
        return "stock", "the upstream is fine-tuned: its features change during training, nothing can be cached"
    return "fast", None


def resolve_default_ckpt(text: str) -> str:
    """`care` without `:ckpt` loads $CARE_CKPT or ~/.cache/...: pin that path here, so the cache key and
    results.json name the weights actually used (a changed $CARE_CKPT must not reuse old features)."""
    name, eq, rest = text.partition("=")
    if not eq or ":" in name:
        name, rest = "", text
    hub, _, ckpt = rest.partition(":")
    if ckpt or hub not in CARE_HUBS:
        return text
    from care_upstream.hubconf import _resolve_ckpt

    try:
        path = _resolve_ckpt(None)
    except FileNotFoundError as e:
        raise ConfigError(f"upstream {text!r}: {e}") from None
    return f"{name}={hub}:{path}" if name else f"{hub}:{path}"


def pad_mode_for(padding_exact: bool, cfg: SweepConfig) -> str:
    """The fast path's replay of padded batches (`fast_probe.replay_padded_means`): exact ("zero") for
    an upstream whose expert says ``padding_exact``, else each utterance's solo mean ("alone")."""
    if cfg.pad_mode != "auto":
        return cfg.pad_mode
    return "zero" if padding_exact else "alone"


def default_devices(jobs: int) -> List[str]:
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def cell_config(cell: Cell, cfg: SweepConfig, path: str, tc: Dict[str, Any]) -> Dict[str, Any]:
    """Everything that changes a cell's numbers; its digest decides whether a finished cell is reused.
    `tc`: `task_config(cell.task)`, read once per task by the plan."""
    return {"path": path, "pad_mode": cfg.pad_mode if path == "fast" else None, "overrides": cell_overrides(cell, cfg),
            "task_config_path": tc["path"], "task_config": tc["config"],
            "upstream": {"hub": cell.upstream.hub, "ckpt_sha256": cell.upstream.ckpt_sha256},
            "featurizer_normalize": cfg.featurizer_normalize, "upstream_trainable": cfg.upstream_trainable}


def degenerate_message(spec: UpstreamSpec, corpus: str, ratio: float) -> str:
    return (f"upstream {spec.label} ({spec.hub}) refused on {corpus}: its pooled features are the same for every "
            f"utterance (spread across utterances {ratio:.1e} of the spread within one), as when an upstream "
            "normalises each utterance's frames to zero mean (s3prl's fbank and mfcc do) and the probe averages "
            "frames over time: the probe can only learn the class prior (chance UAR); use an upstream without "
            "per-utterance normalisation (e.g. "
            "egemaps, compare or a learned model), or pass --allow-degenerate to run it anyway (marked in the table)")


# ------------------------------------------------------------------------------- input checks
def _known_upstreams() -> List[str]:
    from care_superb.s3prl_registry import register

    register()
    from s3prl import hub

    return hub.options()  # s3prl's own list (the one `care-superb` checks -u against, launcher.check_upstream)


def parse_upstreams(texts: Sequence[str]) -> List[UpstreamSpec]:
    """Each `--upstreams` entry as a spec, or one sentence saying what is wrong with it."""
    known = _known_upstreams()
    specs = []
    for text in texts:
        try:
            spec = UpstreamSpec.parse(resolve_default_ckpt(text))
        except ConfigError:
            raise
        except (ValueError, FileNotFoundError) as e:
            raise ConfigError(str(e)) from None
        if spec.hub not in known:
            close = difflib.get_close_matches(spec.hub, known, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else " (s3prl's names, plus care, egemaps, compare)"
            raise ConfigError(f"upstream {text!r}: s3prl has no upstream named {spec.hub!r}{hint}")
        if spec.hub in CARE_HUBS and spec.ckpt:
            check_care_folder(Path(spec.ckpt))
        specs.append(spec)
    if len({s.key for s in specs}) != len(specs):
        raise ConfigError(f"upstreams {list(texts)} name the same upstream twice")
    if len({s.label for s in specs}) != len(specs):
        raise ConfigError(f"upstreams {list(texts)}: two have the same table label; name them, e.g. "
                          "init=care:<folder> trained=care:<folder>")
    return specs


def check_care_folder(path: Path) -> None:
    """Load a CARE checkpoint once before anything runs, with the one CARE loader (config, weights,
    every key and shape checked): a bad file is one sentence naming it, not a failure per cell."""
    from care_upstream.model import CARE

    try:
        CARE.from_pretrained(path)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(str(e)) from None


def pick_reference(ref: Optional[str], texts: Sequence[str], specs: Sequence[UpstreamSpec]) -> UpstreamSpec:
    """`--reference` as written in `--upstreams`, or as its hub, key or label."""
    if ref is None:
        return specs[0]
    for text, spec in zip(texts, specs):
        if ref in (text, spec.hub, spec.key, spec.label):
            return spec
    raise ConfigError(f"--reference {ref!r} is not one of --upstreams ({', '.join(texts)})")


def check_task_config(task: str, overrides: Sequence[str], out: Path) -> Dict[str, Any]:
    """Parse the task's config with the sweep's overrides once, before anything runs, so a typo or a
    config that can never select a model is one sentence, not one failure per cell. Returns the parsed
    config: what every cell of the task trains with, `-o` overrides included."""
    from sweep.fast_probe import parse_stock_args, stock_argv

    tmp = out / "_check" / task
    try:
        try:
            _, config = parse_stock_args(stock_argv("train", task, "fbank", None, tmp, 0, overrides=overrides))
        except SystemExit as e:
            raise ConfigError(f"task {task}: s3prl rejected the arguments (exit {e.code}); check -o/--override") from None
        except Exception as e:
            raise ConfigError(f"task {task}: the overrides {list(overrides)} do not apply to its config "
                              f"({type(e).__name__}: {e})") from None
    finally:
        shutil.rmtree(out / "_check", ignore_errors=True)
    runner = config["runner"]
    datarc = config["downstream_expert"]["datarc"]
    if not datarc.get("steps_from_epochs") and runner["total_steps"] < runner["eval_step"]:
        raise ConfigError(f"task {task}: config.runner.total_steps={runner['total_steps']} is below "
                          f"config.runner.eval_step={runner['eval_step']}, so no dev evaluation would pick a model; "
                          "lower eval_step or raise total_steps")
    return config


# -------------------------------------------------------------------------------- worker jobs
def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def run_extract(job: ExtractJob) -> ExtractResult:
    """Step 2: one upstream over one corpus into the cache, then the spread of what is cached."""
    import torch

    from downstream_tasks.audio import AudioConfig, load_audio
    from sweep.cache import CacheConfig, FeatureCache, time_means
    from sweep.fast_probe import build_upstream, parse_stock_args, stock_argv

    spec = job.upstream
    t0 = time.time()
    tmp = Path(job.cache_root) / "_extract_args" / spec.key
    args, _ = parse_stock_args(stock_argv("train", job.tasks[0], spec.hub, spec.ckpt, tmp, 0,
                                          overrides=job.overrides, device=job.device))
    from s3prl.upstream.interfaces import Featurizer

    upstream = build_upstream(args)
    upstream.eval()
    featurizer = Featurizer(upstream=upstream, feature_selection=args.upstream_feature_selection,
                            layer_selection=args.upstream_layer_selection, upstream_device=args.device)
    rate = int(featurizer.downsample_rate)
    audio = AudioConfig(max_seconds=job.max_seconds, min_seconds=job.min_seconds)
    cache = FeatureCache(job.cache_root, spec, CacheConfig(max_seconds=job.max_seconds, min_seconds=job.min_seconds),
                         log=_log)

    def featurize(wav):
        with torch.no_grad():
            feats = featurizer._select_feature(upstream([wav.to(args.device)]))
        if not isinstance(feats, (list, tuple)):
            feats = [feats]
        return time_means(feats, wav.numel(), rate)

    def load(u):
        return load_audio(u.path, audio, segments=u.segments)

    report = cache.extract(job.utts, featurize, load)
    for line in report.lines():
        _log(f"{spec.key}/{job.corpus}: {line}")
    spread = cache.spread(job.utts)
    shutil.rmtree(tmp, ignore_errors=True)
    return ExtractResult(upstream=spec.key, corpus=job.corpus, tasks=job.tasks, extracted=report.extracted,
                         reused=report.reused, failed=report.failed, corrupt_shards=report.corrupt_shards,
                         padding_exact=bool(getattr(upstream, "padding_exact", False)), spread_ratio=spread.ratio,
                         n_utterances=spread.n, seconds=time.time() - t0)


_FEATURES: Dict[Tuple, Any] = {}


def _cache_fingerprint(cache_root) -> Tuple:
    """Which shards the on-disk cache holds now (names are content hashes; mtimes catch rewrites)."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in Path(cache_root).rglob("shard-*.safetensors")))


def _cached_features(job: CellJob, utts: List[UttRef]):
    """Features of one task, kept in memory while consecutive cells of the same task run here.

    The key names the cache folder and its current shards, so a second sweep in the same process
    (another cache, or recomputed shards after an audio file changed) never gets stale features.
    Loading verifies every shard it reads (`FeatureCache.load`).
    """
    from sweep.cache import CacheConfig, FeatureCache

    spec = job.cell.upstream
    key = (spec.key, job.cell.task, job.manifest_mtime, job.cache_root, _cache_fingerprint(job.cache_root))
    if key not in _FEATURES:
        cache = FeatureCache(job.cache_root, spec, CacheConfig(max_seconds=job.max_seconds,
                                                               min_seconds=job.min_seconds), log=_log)
        _FEATURES.clear()  # one task's features per worker at a time: memory stays bounded
        _FEATURES[key] = cache.load(utts, with_frames=True)
    return _FEATURES[key]


def run_cell(job: CellJob) -> CellResult:
    """Step 3: one cell, fast or stock; always leaves a results.json (done or failed)."""
    cell, spec = job.cell, job.cell.upstream
    cdir = cell.dir(job.out)
    if cdir.exists():
        shutil.rmtree(cdir)  # leftovers of a killed run: start the cell clean
    cdir.mkdir(parents=True)
    expdir = cdir / EXPDIR_NAME
    t0 = time.time()
    result = {"schema": SCHEMA_VERSION, "task": cell.task, "task_kind": job.task_kind, "fold": cell.fold,
              "seed": cell.seed, "upstream": spec.to_dict(), "path": job.path, "stock_reason": job.stock_reason,
              "pad_mode": job.pad_mode if job.path == "fast" else None,
              "config": job.config, "config_hash": job.config_hash, "versions": software_versions(),
              "device": job.device, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if job.degenerate:
        result["degenerate"] = job.degenerate
    try:
        extra = _run_fast(job, expdir) if job.path == "fast" else _run_stock(job, expdir, cdir)
        result.update(extra)
        result["status"] = "done"
    except Exception as e:
        kind = "config" if isinstance(e, ConfigError) else "runtime"
        result.update({"status": "failed", "metrics": {}, "error": f"{type(e).__name__}: {e}", "error_kind": kind,
                       "traceback": traceback.format_exc()[-4000:]})
    result["wall_s"] = time.time() - t0
    atomic.write_json(cell.results_path(job.out), result)
    return CellResult(cell.name, result["status"], result.get("error"), result.get("error_kind"), result["wall_s"])


def _expert_metrics(expdir: Path) -> Dict[str, Any]:
    path = expdir / "results.json"
    if not path.is_file():
        raise RuntimeError(f"{path}: the expert wrote no results (did training reach an evaluation?)")
    data = json.loads(path.read_text())
    if "test" not in data:
        raise RuntimeError(f"{path}: no test entry")
    scalars = lambda d: {k: float(v) for k, v in d["metrics"].items() if isinstance(v, (int, float))}
    out = {"metrics": {"test": scalars(data["test"])}, "n_test": data["test"].get("n")}
    if "dev_best" in data:
        out["metrics"]["dev_best"] = scalars(data["dev_best"])
        out["best_step"] = data["dev_best"].get("step")
    if data["test"].get("layer_weights"):
        out["layer_weights"] = data["test"]["layer_weights"]
    # What a probe that learnt nothing scores on this split (chance, train-majority class), and for
    # DAIC-WOZ the scores per interview: both computed by the expert (downstream_tasks.metrics), so
    # the fast and the stock path carry the same numbers.
    for block in ("reference", "participant"):
        if data["test"].get(block):
            out[block] = data["test"][block]
    return out


def _run_fast(job: CellJob, expdir: Path) -> Dict[str, Any]:
    from downstream_tasks.manifest import read_manifest
    from sweep.fast_probe import parse_stock_args, stock_argv, train_fast

    spec = job.cell.upstream
    rows = read_manifest(job.manifest_dir).rows
    utts = [UttRef(r.id, r.path, r.segments or None) for r in rows]
    features, failed, frames = _cached_features(job, utts)
    try:
        args, config = parse_stock_args(stock_argv("train", job.cell.task, spec.hub, spec.ckpt, expdir, job.cell.seed,
                                                   overrides=job.overrides, device=job.device))
    except SystemExit as e:
        raise ConfigError(f"s3prl rejected the arguments of {job.cell.name} (exit {e.code})") from None
    res = train_fast(args, config, features, frames=frames, failed=failed, pad_mode=job.pad_mode, log=_log)
    out = _expert_metrics(expdir)
    out["layer_weights"] = res.layer_weights
    out["skipped_utterances"] = res.skipped
    out["steps"] = res.steps
    return out


def _run_stock(job: CellJob, expdir: Path, cdir: Path) -> Dict[str, Any]:
    from sweep.fast_probe import stock_argv

    spec = job.cell.upstream
    log = cdir / "stock.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    train = stock_argv("train", job.cell.task, spec.hub, spec.ckpt, expdir, job.cell.seed, overrides=job.overrides,
                       device=job.device, normalize=job.normalize, trainable=job.trainable)
    with open(log, "a") as f:
        for argv in (train, None):
            if argv is None:
                ckpt = expdir / "dev-best.ckpt"
                if not ckpt.is_file():
                    raise RuntimeError(f"stock training left no {ckpt} (see {log})")
                argv = ["-m", "evaluate", "-e", str(ckpt), "-t", "test", "--device", job.device]
            # what `run_downstream.py` does, without needing the checkout's top-level script
            cmd = [sys.executable, "-c", "import sys; from care_superb.launcher import main; main(sys.argv[1:])", *argv]
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.run(cmd, cwd=str(PROJECT_ROOT), stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            if rc != 0:
                raise RuntimeError(f"run_downstream.py {' '.join(argv[:2])} exited {rc} (see {log})")
    out = _expert_metrics(expdir)
    for p in expdir.glob("*.ckpt"):
        if p.name != "dev-best.ckpt":
            p.unlink()  # states-*.ckpt: the cell is done, only the evaluated weights are kept
    return out


def run_job(job):
    return run_extract(job) if isinstance(job, ExtractJob) else run_cell(job)


# ----------------------------------------------------------------------------------- the sweep
class Progress:
    def __init__(self, total: int, already: int, jobs: int):
        self.total, self.done, self.failed, self.jobs = total, already, 0, jobs
        self.t0 = time.time()
        self.durations: List[float] = []

    def update(self, res: CellResult) -> str:
        self.done += 1
        self.durations.append(res.wall_s)
        if res.status != "done":
            self.failed += 1
        remaining = self.total - self.done
        mean = sum(self.durations) / len(self.durations)
        eta = remaining * mean / max(1, self.jobs)
        fail = f", {self.failed} failed" if self.failed else ""
        return (f"{self.done}/{self.total} cells done{fail}, elapsed {_hms(time.time() - self.t0)}, "
                f"~{_hms(eta)} left  [{res.name}: {res.status} in {res.wall_s:.1f} s]")


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _run_pool(jobs: list, n_workers: int, on_result: Callable[[Any], None]) -> None:
    if n_workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            on_result(run_job(job))
        return
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        pending = {pool.submit(run_job, j) for j in jobs}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_result(fut.result())


@dataclass
class Plan:
    """What step 1 decided: the cells, which of them still have to run, and where."""

    out: Path
    cache_root: Path
    specs: List[UpstreamSpec]
    reference: UpstreamSpec
    cells: List[Cell]
    todo: List[CellJob]
    path: str
    reason: Optional[str]
    kinds: Dict[str, str]
    devices: List[str]
    folds: Dict[str, List[str]]


def _write_plan(plan: Plan, refused: Dict[str, str]) -> None:
    plan_path = plan.out / PLAN_NAME
    old = {}
    if plan_path.is_file():
        try:
            old = json.loads(plan_path.read_text())
        except json.JSONDecodeError:
            _log(f"{plan_path} was unreadable; it is rewritten")
        if not isinstance(old, dict):
            old = {}
    cell_rows = {(c["task"], c["upstream"], c["fold"], c["seed"]) for c in old.get("cells", [])}
    cell_rows |= {(c.task, c.upstream.key, c.fold, c.seed) for c in plan.cells}
    ups = {u["key"]: u for u in old.get("upstreams", [])}
    ups.update({s.key: s.to_dict() for s in plan.specs})
    out = {"cells": [dict(zip(("task", "upstream", "fold", "seed"), r)) for r in sorted(cell_rows)],
           "upstreams": list(ups.values()), "reference": plan.reference.key,
           "task_kinds": {**old.get("task_kinds", {}), **plan.kinds}, "refused": refused,
           "path": plan.path, "stock_reason": plan.reason,
           "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic.write_json(plan_path, out)


def plan_sweep(cfg: SweepConfig) -> Plan:
    """Step 1: check the input, list the cells, and make a job of every cell not finished yet."""
    from downstream_tasks.audio import AudioConfig
    from downstream_tasks.protocol import get_task

    sys.path.insert(0, str(PROJECT_ROOT))
    out = Path(cfg.out).resolve()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    for t in cfg.tasks:
        try:
            get_task(t)
        except KeyError as e:
            raise ConfigError(e.args[0]) from None
    specs = parse_upstreams(cfg.upstreams)
    reference = pick_reference(cfg.reference, cfg.upstreams, specs)
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cfg.cache).resolve() if cfg.cache else out / "cache"
    if any(s.hub == "wavlm" for s in specs):
        _log("note: s3prl's `wavlm` is WavLM Base+; the paper's Table II column is WavLM-base (`wavlm_base`)")
    parsed = {t: check_task_config(t, cfg.overrides, out) for t in cfg.tasks}
    path, reason = choose_path(cfg)
    if reason:
        _log(f"stock runner for every cell: {reason}")
    folds = {t: task_folds(t, cfg) for t in cfg.tasks}
    seeds = [cfg.seed_base + i for i in range(cfg.seeds)]
    cells = expand_cells(cfg.tasks, {t: get_task(t).runs_of(folds[t], seeds) for t in cfg.tasks}, specs)
    kinds = {t: get_task(t).kind for t in cfg.tasks}
    devices = cfg.devices or default_devices(cfg.jobs)
    tconfs = {t: task_config(t) for t in cfg.tasks}
    audio = {t: AudioConfig.from_datarc(parsed[t]["downstream_expert"]["datarc"]) for t in cfg.tasks}
    mdirs = {t: manifest_dir(t, cfg) for t in cfg.tasks}
    mpaths = {t: mdirs[t] / "manifest.csv" if mdirs[t].is_dir() else mdirs[t] for t in cfg.tasks}
    mtimes = {t: os.stat(p).st_mtime_ns if p.exists() else 0 for t, p in mpaths.items()}

    todo: List[CellJob] = []
    for cell in cells:
        conf = cell_config(cell, cfg, path, tconfs[cell.task])
        digest = config_digest(conf)
        if is_done(cell, out, digest):
            continue
        if cell.results_path(out).is_file():
            try:
                old = read_results(cell.results_path(out))
                why = "failed before" if old["status"] != "done" else "its config changed"
            except ValueError as e:
                why = f"unreadable results ({e})"
            _log(f"re-running {cell.name}: {why}")
        todo.append(CellJob(
            cell=cell, task_kind=kinds[cell.task], out=str(out), path=path, stock_reason=reason, config=conf,
            config_hash=digest, overrides=cell_overrides(cell, cfg), device=devices[len(todo) % len(devices)],
            cache_root=str(cache_root), manifest_dir=str(mdirs[cell.task]), manifest_mtime=mtimes[cell.task],
            max_seconds=audio[cell.task].max_seconds, min_seconds=audio[cell.task].min_seconds,
            normalize=cfg.featurizer_normalize, trainable=cfg.upstream_trainable))
    return Plan(out=out, cache_root=cache_root, specs=specs, reference=reference, cells=cells, todo=todo, path=path,
                reason=reason, kinds=kinds, devices=devices, folds=folds)


def extract_jobs(plan: Plan, cfg: SweepConfig) -> List[ExtractJob]:
    """One job per (upstream, corpus, audio settings) that an unfinished cell needs."""
    from downstream_tasks.manifest import read_manifest
    from downstream_tasks.protocol import get_task

    jobs: List[ExtractJob] = []
    need = {(j.cell.upstream.key, get_task(j.cell.task).corpus) for j in plan.todo}
    audio_of = {j.cell.task: (j.max_seconds, j.min_seconds) for j in plan.todo}
    for spec in plan.specs:
        by_corpus: Dict[str, List[str]] = {}
        for t in cfg.tasks:
            if (spec.key, get_task(t).corpus) in need and t in audio_of:
                by_corpus.setdefault(get_task(t).corpus, []).append(t)
        for corpus, tasks in by_corpus.items():
            for max_s, min_s in sorted({audio_of[t] for t in tasks}, key=str):
                group = [t for t in tasks if audio_of[t] == (max_s, min_s)]
                utts: Dict[tuple, UttRef] = {}
                for t in group:
                    for r in read_manifest(manifest_dir(t, cfg)).rows:
                        u = UttRef(r.id, r.path, r.segments or None)
                        utts[(u.path, u.segments)] = u
                jobs.append(ExtractJob(
                    upstream=spec, corpus=corpus, tasks=group, utts=list(utts.values()),
                    cache_root=str(plan.cache_root),
                    overrides=cell_overrides(Cell(group[0], plan.folds[group[0]][0], 0, spec), cfg),
                    max_seconds=max_s, min_seconds=min_s, device=plan.devices[len(jobs) % len(plan.devices)]))
    return jobs


def extract_features(plan: Plan, cfg: SweepConfig) -> List[ExtractResult]:
    """Step 2: fill the cache for every unfinished fast-path cell; failures are listed, not fatal."""
    jobs = extract_jobs(plan, cfg)
    _log(f"cache: {len(jobs)} extraction job(s) (one per upstream and corpus) into {plan.cache_root}")
    results: List[ExtractResult] = []

    def on_extract(res: ExtractResult) -> None:
        _log(f"cache {res.upstream}/{res.corpus}: {res.extracted} extracted, {res.reused} reused, "
             f"{len(res.failed)} failed, {res.seconds:.1f} s")
        results.append(res)

    workers = min(cfg.jobs, len(plan.devices)) if plan.devices[0].startswith("cuda") else cfg.jobs
    _run_pool(jobs, workers, on_extract)
    failures = {f"{r.upstream}/{r.corpus}": r.failed for r in results if r.failed}
    if failures:
        atomic.write_json(plan.out / "cache_failures.json", failures)
        _log(f"upstream failures written to {plan.out / 'cache_failures.json'}; those utterances are skipped "
             "and listed in each cell's results.json and under the table")
    return results


def guard_degenerate(plan: Plan, results: Sequence[ExtractResult], cfg: SweepConfig) -> Dict[str, str]:
    """Refuse (or, with --allow-degenerate, mark) the cells of an upstream whose pooled features do not
    differ across utterances. Returns cell name -> refusal sentence."""
    specs = {s.key: s for s in plan.specs}
    pad = {r.upstream: r.padding_exact for r in results}
    flagged: Dict[Tuple[str, str], Tuple[str, float]] = {}
    for r in results:
        if r.spread_ratio < DEGENERATE_RATIO:
            msg = degenerate_message(specs[r.upstream], r.corpus, r.spread_ratio)
            for t in r.tasks:
                flagged[(r.upstream, t)] = (msg, r.spread_ratio)
            _log(("warning: " if cfg.allow_degenerate else "") + msg)
    refused: Dict[str, str] = {}
    keep = []
    for job in plan.todo:
        job.pad_mode = pad_mode_for(pad.get(job.cell.upstream.key, False), cfg)
        hit = flagged.get((job.cell.upstream.key, job.cell.task))
        if hit and not cfg.allow_degenerate:
            refused[job.cell.name] = hit[0]
            continue
        if hit:
            job.degenerate = {"spread_ratio": hit[1], "threshold": DEGENERATE_RATIO, "message": hit[0]}
        keep.append(job)
    plan.todo = keep
    return refused


def run_cells(plan: Plan, cfg: SweepConfig) -> List[CellResult]:
    """Step 3: train every unfinished cell, reporting progress as they finish."""
    progress = Progress(len(plan.cells), len(plan.cells) - len(plan.todo), cfg.jobs)
    results: List[CellResult] = []

    def on_cell(res: CellResult) -> None:
        results.append(res)
        _log(progress.update(res))

    _run_pool(plan.todo, cfg.jobs, on_cell)
    return results


def run_sweep(cfg: SweepConfig) -> Dict[str, Any]:
    """Plan, extract, cells, table. Bad input raises ConfigError (one sentence) before anything runs."""
    plan = plan_sweep(cfg)
    n_done = len(plan.cells) - len(plan.todo)
    _log(f"{len(plan.cells)} cells ({len(cfg.tasks)} tasks x folds x {cfg.seeds} seeds x {len(plan.specs)} "
         f"upstreams); {n_done} already finished, {len(plan.todo)} to run on {cfg.jobs} worker(s), devices "
         f"{plan.devices}; path: {plan.path}")
    refused: Dict[str, str] = {}
    _write_plan(plan, refused)  # before anything long runs: the table can tell what was asked for
    if plan.path == "fast" and plan.todo:
        refused = guard_degenerate(plan, extract_features(plan, cfg), cfg)
        _write_plan(plan, refused)
    results = run_cells(plan, cfg)
    failed = [f"{r.name}: {r.error}" for r in results if r.status != "done"]
    config_failed = [r for r in results if r.status != "done" and r.error_kind == "config"]
    summary = {"cells": len(plan.cells), "ran": len(results), "skipped_finished": n_done, "failed": failed,
               "refused": sorted(set(refused.values()))}
    if cfg.table:
        from sweep.table import write_table

        c = write_table(plan.out, plots=cfg.plots)
        _log(f"table: {plan.out / 'table.md'}, {plan.out / 'table.csv'}")
        for p in c.problems:
            _log(f"table note: {p}")
    if refused:
        _log(f"{len(refused)} cell(s) refused (degenerate features, see above); nothing was trained for them")
    if config_failed:
        _log(f"{len(config_failed)} cell(s) failed on their configuration; running again fails the same way, "
             "so fix what each says first:")
        for r in config_failed:
            _log(f"  {r.name}: {r.error}")
    if len(failed) > len(config_failed):
        _log(f"{len(failed) - len(config_failed)} cell(s) failed while running; rerun the same command to retry "
             "them (finished cells are kept):")
        for r in results:
            if r.status != "done" and r.error_kind != "config":
                _log(f"  {r.name}: {r.error}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="care-superb sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--tasks", nargs="+", required=True, help="task names (downstream_tasks/<task>)")
    p.add_argument("--upstreams", nargs="+", required=True,
                   help="s3prl hub names, with :<checkpoint> where needed and an optional <name>= for the table")
    p.add_argument("--seeds", type=int, default=5, help="runs per fold (seeds seed_base .. seed_base+N-1)")
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--folds", nargs="+", help="only these folds (default: all folds of each manifest)")
    p.add_argument("--out", default="runs")
    p.add_argument("--data", help="folder holding <task>/manifest.csv (default: each config's datarc.manifest_dir)")
    p.add_argument("--cache", help="feature cache folder (default: <out>/cache)")
    p.add_argument("--jobs", type=int, default=1, help="cells in parallel (spread over the GPUs, else CPU workers)")
    p.add_argument("--devices", nargs="+", help="devices to use (default: every CUDA device, else cpu)")
    p.add_argument("--stock", action="store_true", help="run every cell with the stock runner (no cache)")
    p.add_argument("--featurizer-normalize", action="store_true",
                   help="Featurizer layer norm (s3prl --upstream_feature_normalize); implies the stock runner")
    p.add_argument("--upstream-trainable", action="store_true", help="fine-tune the upstream (-f); implies stock")
    p.add_argument("--pad-mode", choices=("auto", "alone", "zero"), default="auto",
                   help="how the fast path replays padded batches (see sweep.fast_probe.replay_padded_means)")
    p.add_argument("--reference", help="the upstream the others are compared with in the table's paired tests "
                                       "(as written in --upstreams, or its name; default: the first)")
    p.add_argument("--allow-degenerate", action="store_true",
                   help="run upstreams whose pooled features are the same for every utterance (marked in the table)")
    p.add_argument("-o", "--override", action="append", default=[],
                   help="extra s3prl override, e.g. config.runner.total_steps=200 (repeatable)")
    p.add_argument("--no-table", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    a = build_parser().parse_args(argv)
    if a.jobs < 1 or a.seeds < 1:
        raise SystemExit("care-superb sweep: --jobs and --seeds must be >= 1")
    cfg = SweepConfig(tasks=a.tasks, upstreams=a.upstreams, seeds=a.seeds, seed_base=a.seed_base, folds=a.folds,
                      out=a.out, data=a.data, cache=a.cache, jobs=a.jobs, devices=a.devices, stock=a.stock,
                      featurizer_normalize=a.featurizer_normalize, upstream_trainable=a.upstream_trainable,
                      pad_mode=a.pad_mode, overrides=a.override, reference=a.reference,
                      allow_degenerate=a.allow_degenerate, table=not a.no_table, plots=not a.no_plots)
    try:
        summary = run_sweep(cfg)
    except ConfigError as e:
        raise SystemExit(f"care-superb sweep: {e}") from None
    if summary["failed"] or summary["refused"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
