"""`care-superb sweep`: every (task, fold, seed, upstream) cell, resumable, in parallel, with a table.

    care-superb sweep --tasks emotion_cafe emotion_emodb --upstreams care:<ckpt> wavlm hubert \\
        --seeds 5 --out runs/ [--jobs 4] [--data data/] [--folds fold1 fold2] [--stock]

Two phases. (1) Cache: for each upstream and corpus, the upstream runs once per utterance and its
per-layer time-means are stored (`sweep.cache`). (2) Cells: the probe trains on the cache with the
stock expert and the stock loop replayed (`sweep.fast_probe`), one results.json per cell.
With ``--featurizer-normalize``, ``--upstream-trainable`` or ``--stock`` every cell runs
``run_downstream.py -m train`` then ``-m evaluate`` instead, and the sweep says why.

A cell is finished when its results.json says so (written atomically at the very end), so a killed
sweep simply starts again and skips finished cells; a cell whose config changed is run again.
The seed of a cell sets both s3prl's ``--seed`` (head init) and ``datarc.seed`` (the expert's
shuffle order), so seeds differ in both.
"""

from __future__ import annotations

import argparse
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
from typing import Any, Callable, Dict, List, Optional, Tuple

from care_core import atomic
from sweep.cells import (
    PLAN_NAME,
    SCHEMA_VERSION,
    Cell,
    UpstreamSpec,
    config_digest,
    expand_cells,
    is_done,
    read_results,
    software_versions,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPDIR_NAME = "s3prl"  # the s3prl experiment folder inside a cell (the expert writes its own results.json)
ZERO_PAD_HUBS = ("care", "care_acoustic", "care_semantic", "care_random_base", "care_random_tiny")


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
    table: bool = True
    plots: bool = True


# ------------------------------------------------------------------------------------ helpers
def _log(msg: str) -> None:
    print(f"[sweep] {msg}", file=sys.stderr, flush=True)


def task_config(task: str) -> Dict[str, Any]:
    import yaml

    from care_superb.launcher import default_config

    path = default_config(task)
    if path is None:
        raise ValueError(f"task {task!r}: no config.yaml found (neither downstream_tasks/{task}/ nor s3prl)")
    with open(path) as f:
        return {"path": str(path), "config": yaml.safe_load(f), "text": Path(path).read_text()}


def manifest_dir(task: str, cfg: SweepConfig) -> Path:
    if cfg.data:
        return Path(cfg.data) / task
    datarc = task_config(task)["config"]["downstream_expert"]["datarc"]
    return Path(datarc["manifest_dir"])


def task_folds(task: str, cfg: SweepConfig) -> List[str]:
    from downstream_tasks.manifest import read_manifest

    names = read_manifest(manifest_dir(task, cfg)).fold_names
    if cfg.folds:
        bad = [f for f in cfg.folds if f not in names]
        if bad:
            raise ValueError(f"task {task}: fold(s) {bad} not in its manifest (has {names})")
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
    hub, _, ckpt = text.partition(":")
    if ckpt or not hub.startswith("care") or hub.startswith("care_random"):
        return text
    from care_upstream.hubconf import _resolve_ckpt

    return f"{hub}:{_resolve_ckpt(None)}"


def pad_mode_for(spec: UpstreamSpec, cfg: SweepConfig) -> str:
    if cfg.pad_mode != "auto":
        return cfg.pad_mode
    return "zero" if spec.hub in ZERO_PAD_HUBS else "alone"


def default_devices(jobs: int) -> List[str]:
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


def cell_config(cell: Cell, cfg: SweepConfig, path: str, pad_mode: str) -> Dict[str, Any]:
    """Everything that changes a cell's numbers; its digest decides whether a finished cell is reused."""
    tc = task_config(cell.task)
    return {"path": path, "pad_mode": pad_mode if path == "fast" else None, "overrides": cell_overrides(cell, cfg),
            "task_config_path": tc["path"], "task_config": tc["config"],
            "upstream": {"hub": cell.upstream.hub, "ckpt_sha256": cell.upstream.ckpt_sha256},
            "featurizer_normalize": cfg.featurizer_normalize, "upstream_trainable": cfg.upstream_trainable}


# -------------------------------------------------------------------------------- worker jobs
def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


def _extract_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """Phase 1: one upstream over the utterances of one corpus (all its tasks' manifests)."""
    import torch

    from downstream_tasks.audio import AudioConfig, load_audio
    from sweep.cache import CacheConfig, FeatureCache, UttRef, time_means
    from sweep.fast_probe import build_upstream, parse_stock_args, stock_argv

    spec = UpstreamSpec(**job["upstream"])
    t0 = time.time()
    tmp = Path(job["cache_root"]) / "_extract_args" / spec.key
    args, _ = parse_stock_args(stock_argv("train", job["tasks"][0], spec.hub, spec.ckpt, tmp, 0,
                                          overrides=job["overrides"], device=job["device"]))
    from s3prl.upstream.interfaces import Featurizer

    upstream = build_upstream(args)
    upstream.eval()
    featurizer = Featurizer(upstream=upstream, feature_selection=args.upstream_feature_selection,
                            layer_selection=args.upstream_layer_selection, upstream_device=args.device)
    rate = int(featurizer.downsample_rate)
    audio = AudioConfig(max_seconds=job["max_seconds"], min_seconds=job["min_seconds"])
    cache = FeatureCache(job["cache_root"], spec, CacheConfig(max_seconds=job["max_seconds"],
                                                              min_seconds=job["min_seconds"]), log=_log)

    def featurize(wav):
        with torch.no_grad():
            feats = featurizer._select_feature(upstream([wav.to(args.device)]))
        if not isinstance(feats, (list, tuple)):
            feats = [feats]
        return time_means(feats, wav.numel(), rate)

    def load(u):
        return load_audio(u.path, audio, segments=u.segments)

    utts = [UttRef(**u) for u in job["utts"]]
    report = cache.extract(utts, featurize, load)
    for line in report.lines():
        _log(f"{spec.key}/{job['corpus']}: {line}")
    shutil.rmtree(tmp, ignore_errors=True)
    return {"kind": "extract", "upstream": spec.key, "corpus": job["corpus"], "failed": report.failed,
            "corrupt_shards": report.corrupt_shards, "extracted": report.extracted, "reused": report.reused,
            "seconds": time.time() - t0}


_FEATURES: Dict[Tuple, Any] = {}


def _cache_fingerprint(cache_root) -> Tuple:
    """Which shards the on-disk cache holds now (names are content hashes; mtimes catch rewrites)."""
    return tuple(sorted((str(p), p.stat().st_mtime_ns) for p in Path(cache_root).rglob("shard-*.safetensors")))


def _cached_features(job, spec, utts):
    """Features of one task, kept in memory while consecutive cells of the same task run here.

    The key names the cache folder and its current shards, so a second sweep in the same process
    (another cache, or recomputed shards after an audio file changed) never gets stale features.
    """
    from sweep.cache import CacheConfig, FeatureCache

    key = (spec.key, job["task"], job["manifest_mtime"], str(job["cache_root"]), _cache_fingerprint(job["cache_root"]))
    if key not in _FEATURES:
        cache = FeatureCache(job["cache_root"], spec, CacheConfig(max_seconds=job["max_seconds"],
                                                                  min_seconds=job["min_seconds"]), log=_log)
        _FEATURES.clear()  # one task's features per worker at a time: memory stays bounded
        _FEATURES[key] = cache.load(utts, with_frames=True)
    return _FEATURES[key]


def _cell_job(job: Dict[str, Any]) -> Dict[str, Any]:
    """Phase 2: one cell, fast or stock; always leaves a results.json (done or failed)."""
    spec = UpstreamSpec(**job["upstream"])
    cell = Cell(job["task"], job["fold"], job["seed"], spec)
    cdir = cell.dir(job["out"])
    if cdir.exists():
        shutil.rmtree(cdir)  # leftovers of a killed run: start the cell clean
    cdir.mkdir(parents=True)
    expdir = cdir / EXPDIR_NAME
    t0 = time.time()
    result = {"schema": SCHEMA_VERSION, "task": cell.task, "task_kind": job["task_kind"], "fold": cell.fold,
              "seed": cell.seed, "upstream": spec.to_dict(), "path": job["path"], "stock_reason": job["stock_reason"],
              "config": job["config"], "config_hash": job["config_hash"], "versions": software_versions(),
              "device": job["device"], "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        if job["path"] == "fast":
            extra = _run_fast(job, spec, expdir)
        else:
            extra = _run_stock(job, spec, expdir, cdir)
        result.update(extra)
        result["status"] = "done"
    except Exception as e:
        result.update({"status": "failed", "metrics": {}, "error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-4000:]})
    result["wall_s"] = time.time() - t0
    atomic.write_json(cell.results_path(job["out"]), result)
    return {"kind": "cell", "name": cell.name, "status": result["status"], "error": result.get("error"),
            "wall_s": result["wall_s"]}


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
    return out


def _run_fast(job, spec: UpstreamSpec, expdir: Path) -> Dict[str, Any]:
    from downstream_tasks.manifest import read_manifest
    from sweep.cache import UttRef
    from sweep.fast_probe import parse_stock_args, stock_argv, train_fast

    rows = read_manifest(job["manifest_dir"]).rows
    utts = [UttRef(r.id, r.path, r.segments or None) for r in rows]
    features, failed, frames = _cached_features(job, spec, utts)
    args, config = parse_stock_args(stock_argv("train", job["task"], spec.hub, spec.ckpt, expdir, job["seed"],
                                               overrides=job["overrides"], device=job["device"]))
    res = train_fast(args, config, features, frames=frames, failed=failed, pad_mode=job["pad_mode"], log=_log)
    out = _expert_metrics(expdir)
    out["layer_weights"] = res.layer_weights
    out["skipped_utterances"] = res.skipped
    out["steps"] = res.steps
    return out


def _run_stock(job, spec: UpstreamSpec, expdir: Path, cdir: Path) -> Dict[str, Any]:
    from sweep.fast_probe import stock_argv

    log = cdir / "stock.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    train = stock_argv("train", job["task"], spec.hub, spec.ckpt, expdir, job["seed"], overrides=job["overrides"],
                       device=job["device"], normalize=job["normalize"], trainable=job["trainable"])
    with open(log, "a") as f:
        for argv in (train, None):
            if argv is None:
                ckpt = expdir / "dev-best.ckpt"
                if not ckpt.is_file():
                    raise RuntimeError(f"stock training left no {ckpt} (see {log})")
                argv = ["-m", "evaluate", "-e", str(ckpt), "-t", "test", "--device", job["device"]]
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


def run_job(job: Dict[str, Any]) -> Dict[str, Any]:
    return _extract_job(job) if job["kind"] == "extract" else _cell_job(job)


# ----------------------------------------------------------------------------------- the sweep
class Progress:
    def __init__(self, total: int, already: int, jobs: int):
        self.total, self.done, self.failed, self.jobs = total, already, 0, jobs
        self.t0 = time.time()
        self.durations: List[float] = []

    def update(self, res: Dict[str, Any]) -> str:
        self.done += 1
        self.durations.append(res["wall_s"])
        if res["status"] != "done":
            self.failed += 1
        remaining = self.total - self.done
        mean = sum(self.durations) / len(self.durations)
        eta = remaining * mean / max(1, self.jobs)
        fail = f", {self.failed} failed" if self.failed else ""
        return (f"{self.done}/{self.total} cells done{fail}, elapsed {_hms(time.time() - self.t0)}, "
                f"~{_hms(eta)} left  [{res['name']}: {res['status']} in {res['wall_s']:.1f} s]")


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _run_pool(jobs: List[Dict[str, Any]], n_workers: int, on_result: Callable[[Dict[str, Any]], None]) -> None:
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


def _write_plan(out: Path, cells: List[Cell], specs: List[UpstreamSpec], kinds: Dict[str, str],
                path: str, reason: Optional[str]) -> None:
    plan_path = out / PLAN_NAME
    old = {}
    if plan_path.is_file():
        try:
            old = json.loads(plan_path.read_text())
        except json.JSONDecodeError:
            _log(f"{plan_path} was unreadable; it is rewritten")
    cell_rows = {(c["task"], c["upstream"], c["fold"], c["seed"]) for c in old.get("cells", [])}
    cell_rows |= {(c.task, c.upstream.key, c.fold, c.seed) for c in cells}
    ups = {u["key"]: u for u in old.get("upstreams", [])}
    ups.update({s.key: s.to_dict() for s in specs})
    plan = {"cells": [dict(zip(("task", "upstream", "fold", "seed"), r)) for r in sorted(cell_rows)],
            "upstreams": list(ups.values()), "task_kinds": {**old.get("task_kinds", {}), **kinds},
            "path": path, "stock_reason": reason, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic.write_json(plan_path, plan)


def run_sweep(cfg: SweepConfig) -> Dict[str, Any]:
    from downstream_tasks.manifest import read_manifest
    from downstream_tasks.protocol import get_task

    sys.path.insert(0, str(PROJECT_ROOT))
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cfg.cache).resolve() if cfg.cache else out / "cache"
    specs = [UpstreamSpec.parse(resolve_default_ckpt(u)) for u in cfg.upstreams]
    if len({s.key for s in specs}) != len(specs):
        raise ValueError(f"upstreams {cfg.upstreams} name the same upstream twice")
    if any(s.hub == "wavlm" for s in specs):
        _log("note: s3prl's `wavlm` is WavLM Base+; the paper's Table II column is WavLM-base (`wavlm_base`)")
    for t in cfg.tasks:
        get_task(t)  # unknown task: a clear KeyError before anything runs
    path, reason = choose_path(cfg)
    if reason:
        _log(f"stock runner for every cell: {reason}")
    folds = {t: task_folds(t, cfg) for t in cfg.tasks}
    seeds = [cfg.seed_base + i for i in range(cfg.seeds)]
    cells = expand_cells(cfg.tasks, folds, seeds, specs)
    kinds = {t: get_task(t).kind for t in cfg.tasks}
    _write_plan(out, cells, specs, kinds, path, reason)
    devices = cfg.devices or default_devices(cfg.jobs)

    todo = []
    for cell in cells:
        pad = pad_mode_for(cell.upstream, cfg)
        conf = cell_config(cell, cfg, path, pad)
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
        todo.append((cell, conf, digest, pad))
    n_done = len(cells) - len(todo)
    _log(f"{len(cells)} cells ({len(cfg.tasks)} tasks x folds x {len(seeds)} seeds x {len(specs)} upstreams); "
         f"{n_done} already finished, {len(todo)} to run on {cfg.jobs} worker(s), devices {devices}; path: {path}")

    datarcs = {t: task_config(t)["config"]["downstream_expert"]["datarc"] for t in cfg.tasks}
    if path == "fast" and todo:
        extract_jobs = []
        need = {(c.upstream.key, get_task(c.task).corpus) for c, *_ in todo}
        for spec in specs:
            by_corpus: Dict[str, List[str]] = {}
            for t in cfg.tasks:
                if (spec.key, get_task(t).corpus) in need:
                    by_corpus.setdefault(get_task(t).corpus, []).append(t)
            for corpus, tasks in by_corpus.items():
                audio = {(datarcs[t].get("max_seconds", 30), datarcs[t].get("min_seconds", 1)) for t in tasks}
                for max_s, min_s in sorted(audio, key=str):
                    utts = {}
                    for t in tasks:
                        for r in read_manifest(manifest_dir(t, cfg)).rows:
                            seg = tuple(map(tuple, r.segments)) if r.segments else None
                            utts[(r.path, seg)] = {"id": r.id, "path": r.path, "segments": seg}
                    extract_jobs.append({"kind": "extract", "upstream": spec.to_dict(), "corpus": corpus,
                                         "tasks": tasks, "utts": list(utts.values()), "cache_root": str(cache_root),
                                         "overrides": cell_overrides(Cell(tasks[0], folds[tasks[0]][0], 0, spec), cfg),
                                         "max_seconds": max_s, "min_seconds": min_s,
                                         "device": devices[len(extract_jobs) % len(devices)]})
        _log(f"cache: {len(extract_jobs)} extraction job(s) (one per upstream and corpus) into {cache_root}")
        failures: Dict[str, Dict[str, str]] = {}

        def on_extract(res):
            _log(f"cache {res['upstream']}/{res['corpus']}: {res['extracted']} extracted, {res['reused']} reused, "
                 f"{len(res['failed'])} failed, {res['seconds']:.1f} s")
            if res["failed"]:
                failures[f"{res['upstream']}/{res['corpus']}"] = res["failed"]

        _run_pool(extract_jobs, min(cfg.jobs, len(devices) if devices[0].startswith("cuda") else cfg.jobs),
                  on_extract)
        if failures:
            atomic.write_json(out / "cache_failures.json", failures)
            _log(f"upstream failures written to {out / 'cache_failures.json'}; those utterances are skipped "
                 "and listed in each cell's results.json and under the table")

    jobs = []
    for i, (cell, conf, digest, pad) in enumerate(todo):
        mdir = manifest_dir(cell.task, cfg)
        mpath = mdir / "manifest.csv" if mdir.is_dir() else mdir
        datarc = datarcs[cell.task]
        jobs.append({"kind": "cell", "task": cell.task, "task_kind": kinds[cell.task], "fold": cell.fold,
                     "seed": cell.seed, "upstream": cell.upstream.to_dict(), "out": str(out), "path": path,
                     "stock_reason": reason, "config": conf, "config_hash": digest, "pad_mode": pad,
                     "overrides": cell_overrides(cell, cfg), "device": devices[i % len(devices)],
                     "cache_root": str(cache_root), "manifest_dir": str(mdir),
                     "manifest_mtime": os.stat(mpath).st_mtime_ns if mpath.exists() else 0,
                     "max_seconds": datarc.get("max_seconds", 30), "min_seconds": datarc.get("min_seconds", 1),
                     "normalize": cfg.featurizer_normalize, "trainable": cfg.upstream_trainable})
    progress = Progress(len(cells), n_done, cfg.jobs)
    failed: List[str] = []

    def on_cell(res):
        if res["status"] != "done":
            failed.append(f"{res['name']}: {res['error']}")
        _log(progress.update(res))

    _run_pool(jobs, cfg.jobs, on_cell)
    summary = {"cells": len(cells), "ran": len(jobs), "skipped_finished": n_done, "failed": failed}
    if cfg.table:
        from sweep.table import write_table

        c = write_table(out, plots=cfg.plots)
        _log(f"table: {out / 'table.md'}, {out / 'table.csv'}")
        for p in c.problems:
            _log(f"table note: {p}")
    if failed:
        _log(f"{len(failed)} cell(s) failed; rerun the same command to retry them:")
        for f_ in failed:
            _log(f"  {f_}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="care-superb sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--tasks", nargs="+", required=True, help="task names (downstream_tasks/<task>)")
    p.add_argument("--upstreams", nargs="+", required=True, help="s3prl hub names, with :<checkpoint> where needed")
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
                   help="how the fast path replays padded batches (see sweep.fast_probe.train_fast)")
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
                      pad_mode=a.pad_mode, overrides=a.override, table=not a.no_table, plots=not a.no_plots)
    summary = run_sweep(cfg)
    if summary["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
