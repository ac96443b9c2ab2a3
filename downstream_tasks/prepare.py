"""`care-superb prepare <task> --root RAW --out DIR`: raw corpus → checked audio → manifest with folds.

Steps: parse the corpus (its parser refuses unknown labels and wrong layouts, naming the file),
map labels to the task's set, open every audio file once (readable, complete, non-empty, finite,
not silent, at least one model frame long: `care_core.audio.check_usable`; its duration), assign
every fold with the task's rule, refuse any fold where a speaker sits in two splits, then write
``manifest.csv``, ``skipped.csv`` and, last, ``summary.json`` atomically (see
`downstream_tasks.manifest` for the format). Every audio name the parser finds (upper-case
extensions and broken symlinks included) is either in the manifest or in skipped.csv with its
reason; nothing reaches training unchecked.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from care_core import atomic
from downstream_tasks import protocol
from downstream_tasks.audio import AudioError, probe_audio
from downstream_tasks.corpora.base import CorpusError, Utterance
from downstream_tasks.manifest import (
    MANIFEST,
    SKIPPED,
    SUMMARY,
    ManifestRow,
    write_manifest,
    write_skipped,
)


def segments_of(u: Utterance):
    """Where in its file an utterance lies: ``extra["pieces"]`` (list of (start, end)), or
    ``extra["start"]``/``extra["end"]``; None for the whole file."""
    if u.extra.get("pieces"):
        return [(float(s), float(e)) for s, e in u.extra["pieces"]]
    if u.extra.get("start") is not None or u.extra.get("end") is not None:
        if u.extra.get("end") is None:
            raise CorpusError(u.path, "segment has a start but no end")
        return [(float(u.extra.get("start") or 0.0), float(u.extra["end"]))]
    return None


CACHE = ".audio_check.json"  # in the output folder: re-running prepare skips files already checked
CACHE_EVERY = 1000  # utterances between cache saves, so an interrupted check resumes
#: Bumped whenever the audio rule changes, so results cached under an older rule are checked again.
CACHE_VERSION = 2
#: Bytes hashed per file for the cache key: head, tail and evenly spaced blocks. Reading a few blocks
#: costs little next to decoding, yet a file replaced in place (same size, mtime kept) changes its key.
HASH_BLOCK, HASH_BLOCKS = 65536, 8


def content_digest(path) -> str:
    """A cheap fingerprint of a file's bytes: its size and a BLAKE2 hash of sampled blocks."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(str(size).encode())
        step = max(1, size // HASH_BLOCKS)
        for offset in sorted({*range(0, size, step), max(0, size - HASH_BLOCK)}):
            f.seek(offset)
            h.update(f.read(HASH_BLOCK))
    return h.hexdigest()


def _check_one(u: Utterance):
    try:
        return probe_audio(u.path, segments_of(u)), None
    except AudioError as e:
        return None, e.problem


def load_cache(cache_path: Path) -> Dict[str, list]:
    """The cached audio checks, or {} (with a note) when the file is unreadable, of another version
    or of the wrong shape: it is a cache, so it is rebuilt rather than trusted or crashed on."""
    try:
        data = json.loads(Path(cache_path).read_text(encoding="utf-8", errors="surrogateescape"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        print(f"care-superb prepare: note: {cache_path} is unreadable ({e}); checking every file again",
              file=sys.stderr)
        return {}
    entries = data.get("entries") if isinstance(data, dict) and data.get("version") == CACHE_VERSION else None
    if not isinstance(entries, dict) or not all(
            isinstance(v, list) and len(v) == 2 for v in entries.values()):
        print(f"care-superb prepare: note: {cache_path} is not an audio-check cache of version "
              f"{CACHE_VERSION}; checking every file again", file=sys.stderr)
        return {}
    return entries


def check_audio(utterances: Sequence[Utterance], workers: int = 1, progress: bool = True,
                cache_path: Optional[Path] = None):
    """Durations of the usable utterances and (file, reason) for the rest, in input order.

    With `cache_path`, results are remembered per (file, segments, content digest): a re-run after
    an interruption or a parser fix only opens new or changed files, and a file replaced in place
    is checked again even if its size and mtime were kept."""
    from tqdm import tqdm

    cache: Dict[str, list] = load_cache(Path(cache_path)) if cache_path is not None else {}
    digests: Dict[str, Optional[str]] = {}  # DAIC-WOZ: many segments share one interview file
    keys = []
    for u in utterances:
        path = str(u.path)
        if path not in digests:
            try:
                digests[path] = content_digest(path)
            except OSError:
                digests[path] = None  # missing or unreadable: _check_one reports it
        keys.append(json.dumps([path, segments_of(u), digests[path]]) if digests[path] else None)
    results: List = [cache.get(k) if k else None for k in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    bar = tqdm(total=len(utterances), initial=len(utterances) - len(todo), desc="checking audio",
               disable=not progress, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(todo), CACHE_EVERY):
            chunk = todo[start:start + CACHE_EVERY]
            for i, r in zip(chunk, pool.map(_check_one, [utterances[i] for i in chunk])):
                results[i] = list(r)
                if keys[i]:
                    cache[keys[i]] = list(r)
                bar.update(1)
            if cache_path is not None:
                atomic.write_text(Path(cache_path), json.dumps({"version": CACHE_VERSION, "entries": cache},
                                                               ensure_ascii=False))
    bar.close()
    good, durations, skipped = [], [], []
    for u, (duration, problem) in zip(utterances, results):
        if problem is None:
            good.append(u)
            durations.append(duration)
        else:
            skipped.append((str(u.path), problem))
    return good, durations, skipped


def summarise(spec: protocol.TaskSpec, utts: Sequence[Utterance], folds: Dict[str, List[str]]) -> Dict:
    """Per fold: utterances per split, per split and class, and the speakers of each split."""
    out = {}
    for name, splits in folds.items():
        per = {}
        for split in protocol.SPLITS:
            members = [u for u, s in zip(utts, splits) if s == split]
            if spec.test_from_dev and split == "test":
                members = [u for u, s in zip(utts, splits) if s == "dev"]
            entry = {"n": len(members), "speakers": sorted({u.speaker for u in members})}
            if spec.kind == "classification":
                c = Counter(u.label for u in members)
                entry["classes"] = {label: c.get(label, 0) for label in spec.labels}
            per[split] = entry
        out[name] = per
    return out


def prepare_task(task: str, root, out, *, workers: int = 1, progress: bool = True,
                 verbose: bool = True) -> Dict:
    """Prepare one task; returns the summary also written to ``<out>/summary.json``."""
    spec = protocol.get_task(task)
    root, out = Path(root), Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out is an existing file, not a folder; give a folder to write the manifest in")
    parser = protocol.get_parser(spec)
    kwargs = dict(spec.parser_kwargs)
    parser_skipped: List = []
    if "skipped" in inspect.signature(parser).parameters:
        kwargs["skipped"] = parser_skipped  # files the parser itself set aside (e.g. missing audio)
    parsed = parser(root, **kwargs)
    ids = Counter(u.id for u in parsed)
    dup = [i for i, n in ids.items() if n > 1]
    if dup:
        raise ValueError(f"{root}: parser returned duplicate ids, e.g. {dup[:5]}")
    kept, dropped = protocol.apply_labels(spec, parsed)
    materialize = protocol.get_materializer(spec)
    if materialize is not None:
        accepts = inspect.signature(materialize).parameters
        extra = {k: v for k, v in (("progress", progress), ("workers", workers)) if k in accepts}
        kept = materialize(kept, out / "audio", skipped=parser_skipped, **extra)
    out.mkdir(parents=True, exist_ok=True)
    good, durations, skipped = check_audio(kept, workers=workers, progress=progress, cache_path=out / CACHE)
    skipped = [(getattr(e, "path", ""), getattr(e, "problem", str(e))) for e in parser_skipped] + skipped
    if not good:
        raise ValueError(f"{root}: no usable audio for task {task} ({len(skipped)} files skipped)")
    folds = protocol.assign_folds(spec, good)
    rows = [ManifestRow(id=u.id, path=str(Path(u.path).resolve()), speaker=u.speaker, label=u.label,
                        duration=d, segments=segments_of(u),
                        targets={t: float(u.extra[t]) for t in spec.targets},
                        folds={f: folds[f][i] for f in spec.fold_names})
            for i, (u, d) in enumerate(zip(good, durations))]
    out.mkdir(parents=True, exist_ok=True)
    # summary.json is the completion marker: removed before the manifest changes and written last,
    # so a run killed in between leaves a manifest without summary, which read_manifest refuses.
    (out / SUMMARY).unlink(missing_ok=True)
    write_manifest(out / MANIFEST, rows, spec.fold_names, spec.targets)
    write_skipped(out / SKIPPED, skipped)
    summary = {
        "task": task, "corpus": spec.corpus, "root": str(root.resolve()), "kind": spec.kind,
        "labels": list(spec.labels), "targets": list(spec.targets),
        "n_parsed": len(parsed), "n_utterances": len(good), "n_skipped": len(skipped),
        "dropped_labels": dict(sorted(dropped.items())),
        "total_hours": round(sum(durations) / 3600, 4),
        "test_from_dev": spec.test_from_dev,
        "folds": summarise(spec, good, folds),
    }
    atomic.write_text(out / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if verbose:
        print(format_summary(summary))
    return summary


def format_summary(s: Dict) -> str:
    lines = [f"{s['task']}: {s['n_utterances']} utterances from {s['n_parsed']} parsed, "
             f"{s['n_skipped']} skipped (see skipped.csv), {s['total_hours']} h"]
    if s["dropped_labels"]:
        lines.append("  dropped labels: " + ", ".join(f"{k} {v}" for k, v in s["dropped_labels"].items()))
    for fold, per in s["folds"].items():
        sizes = " / ".join(f"{split} {per[split]['n']} ({len(per[split]['speakers'])} spk)"
                           for split in protocol.SPLITS)
        lines.append(f"  {fold}: {sizes}")
        if s["labels"]:
            for split in protocol.SPLITS:
                cls = ", ".join(f"{k} {v}" for k, v in per[split]["classes"].items())
                lines.append(f"    {split:5s} {cls}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="care-superb prepare",
        description="Read a raw corpus, check every audio file, assign the paper's folds and write "
                    "<out>/manifest.csv, skipped.csv and summary.json.")
    p.add_argument("task", choices=sorted(protocol.TASKS), help="downstream task name")
    p.add_argument("--root", required=True, help="folder where the corpus was unpacked, as distributed")
    p.add_argument("--out", default=None, help="output folder (default: data/<task>)")
    p.add_argument("--workers", type=int, default=2, help="threads reading audio (default 2)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = build_parser().parse_args(argv)
    out = args.out or str(Path("data") / args.task)
    try:
        return prepare_task(args.task, args.root, out, workers=args.workers, progress=not args.no_progress)
    except (ValueError, OSError) as e:  # CorpusError, SpeakerOverlapError, a folder that cannot be
        # written: a readable message, not a traceback
        print(f"care-superb prepare: error: {e}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
