"""`care-superb push DIR REPO_ID`: share a CARE upstream or an exported classifier on the Hugging Face Hub.

Only data files leave the machine (config.json, *.safetensors) plus a model card generated from the
folder's own config and recorded metrics, so what others download can be loaded without running
any code. The upload is one commit through `huggingface_hub.HfApi`; `make_api` is the one seam
tests replace with a recording stand-in.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

TAGS = ("s3prl", "speech-emotion-recognition", "care")
UPLOADED = ("config.json", "*.safetensors")
METRIC_NAMES = {"weighted_f1": ("f1", "weighted F1"), "uar": ("recall", "UAR (unweighted average recall)"),
                "accuracy": ("accuracy", "accuracy"), "ccc_mean": ("ccc", "mean CCC"),
                "ccc_valence": ("ccc", "CCC valence"), "ccc_arousal": ("ccc", "CCC arousal"),
                "ccc_dominance": ("ccc", "CCC dominance")}


class PushError(ValueError):
    """A folder that cannot be pushed as it is; the message names it."""


# ------------------------------------------------------------------------------ model cards
def _front_matter(name: str, extra_tags: Sequence[str], results: List[Dict[str, Any]],
                  pipeline: Optional[str]) -> str:
    lines = ["---", "library_name: s3prl", "license: other", "tags:"]
    lines += [f"- {t}" for t in (*TAGS, *extra_tags)]
    if pipeline:
        lines.append(f"pipeline_tag: {pipeline}")
    if results:
        lines += ["model-index:", f"- name: {json.dumps(name)}", "  results:"]
        for r in results:
            lines += ["  - task:", "      type: audio-classification", f"      name: {json.dumps(r['task'])}",
                      "    dataset:", f"      name: {json.dumps(r['dataset'])}", f"      type: {json.dumps(r['dataset'])}",
                      f"      split: {json.dumps(r['split'])}", "    metrics:"]
            for key, value in r["metrics"].items():
                mtype, mname = METRIC_NAMES[key]
                lines += [f"    - type: {mtype}", f"      value: {float(value):.4f}",
                          f"      name: {json.dumps(mname + ' (' + r['split'] + ', ' + r['fold'] + ')')}"]
    lines.append("---")
    return "\n".join(lines) + "\n"


def _metric_rows(task: str, corpus: str, fold: str, metrics: Dict[str, Any]) -> List[Dict[str, Any]]:
    rows = []
    for split in ("test", "dev_best"):
        entry = metrics.get(split) or {}
        values = {k: v for k, v in (entry.get("metrics") or {}).items() if k in METRIC_NAMES and v is not None}
        if values:
            rows.append({"task": task, "dataset": corpus, "fold": fold,
                         "split": "test" if split == "test" else "dev (best step)", "metrics": values,
                         "n": entry.get("n"), "step": entry.get("step")})
    return rows


def _metrics_table(rows: List[Dict[str, Any]]) -> str:
    if not rows:
        return "No evaluation was recorded with this model (results.json had no dev or test entry).\n"
    keys = sorted({k for r in rows for k in r["metrics"]})
    out = ["| task | fold | split | n | " + " | ".join(keys) + " |", "|---" * (4 + len(keys)) + "|"]
    for r in rows:
        out.append(f"| {r['task']} | {r['fold']} | {r['split']} | {r['n'] or ''} | "
                   + " | ".join(f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "" for k in keys) + " |")
    return "\n".join(out) + "\n"


def classifier_card(cfg, repo_id: Optional[str] = None) -> str:
    """README.md of an exported classifier: task, corpus, fold, metrics, training config, use, limits."""
    name = repo_id or f"{cfg.task}-{cfg.upstream.hub}-{cfg.fold}"
    rows = _metric_rows(cfg.task, cfg.corpus, cfg.fold, cfg.metrics)
    outputs = ", ".join(cfg.outputs)
    what = (f"classifies speech into {len(cfg.labels)} classes ({outputs})" if cfg.kind == "classification"
            else f"predicts {outputs} (regression)")
    weights = ("embedded in `model.safetensors` (`--include-upstream`)" if cfg.upstream.embedded
               else f"not included: `-u {cfg.upstream.hub}`" + (f" with `-k {cfg.upstream.ckpt}`" if cfg.upstream.ckpt else ""))
    lw = cfg.featurizer.layer_weights
    layer_line = (", ".join(f"{w:.3f}" for w in lw) if lw else "single feature (no layer mixing)")
    training = json.dumps(cfg.training, indent=2, sort_keys=True)
    load = repo_id or "PATH_TO_THIS_FOLDER"
    return _front_matter(name, [cfg.task, cfg.corpus], rows, "audio-classification") + f"""
# {name}

A SUPERB-style probe trained with care-superb: it {what}. Task `{cfg.task}` on corpus `{cfg.corpus}`,
fold `{cfg.fold}` (speaker-independent split), from checkpoint `{cfg.source.get('checkpoint')}`
(step {cfg.source.get('step')}).

- Upstream: `{cfg.upstream.spec}` — weights {weights}.
- Layer weights (softmax over {cfg.featurizer.layer_num} layers): {layer_line}.
- Probe: masked mean over frames → Linear({cfg.probe.input_dim}, {cfg.probe.hidden}) → ReLU → Linear({cfg.probe.hidden}, {cfg.probe.n_outputs}).
- Audio: mono, resampled to {cfg.audio.sample_rate} Hz, first {cfg.audio.max_seconds} s kept, zero-padded to {cfg.audio.min_seconds} s.

## Use

```python
from care_superb import EmotionClassifier
clf = EmotionClassifier.from_pretrained("{load}")
print(clf.predict("speech.wav"))
```

or `care-superb predict {load} speech.wav --out predictions.csv`.

## Metrics

{_metrics_table(rows)}
## Training configuration

```json
{training}
```

## Intended use and limits

For research on speech emotion recognition and for comparing upstream models under one protocol.
The probe learned the label set and recording conditions of `{cfg.corpus}` only: expect lower scores
on other speakers, languages, microphones or spontaneous speech, and do not use its output to make
decisions about people (hiring, health, policing). Scores above are from one fold; the paper's
protocol averages all folds. Emotion labels of acted corpora are the intended emotions of actors,
not what a listener or the speaker felt.
"""


def upstream_card(folder: Path, config: Dict[str, Any], repo_id: str, results: Sequence[Path] = ()) -> str:
    """README.md of a CARE upstream folder; `results` are run results.json files whose metrics to list."""
    rows: List[Dict[str, Any]] = []
    for path in results:
        try:
            r = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise PushError(f"{path}: cannot read results ({e})") from None
        from downstream_tasks.protocol import get_task

        corpus = get_task(r["task"]).corpus if r.get("task") else "?"
        rows += _metric_rows(r.get("task", "?"), corpus, r.get("fold", "?"), r)
    dims = {k: config.get(k) for k in ("hidden_dim", "num_layers") if k in config}
    return _front_matter(repo_id, [], rows, "feature-extraction") + f"""
# {repo_id}

CARE (Content and Acoustic Representations of Emotion) speech upstream in care-superb's format:
`config.json` + `model.safetensors`, loadable without running code from this repository.
{('Configuration: ' + json.dumps(dims)) if dims else ''}

## Use

As an s3prl upstream: `python run_downstream.py -m train -u care -k {repo_id} -d emotion_cafe -n my_run`.
In Python: `from care_upstream import CARE; CARE.from_pretrained("{repo_id}")`.
Embeddings: `care-superb extract --upstream care:{repo_id} audio/ --out emb/`.

## Metrics

{_metrics_table(rows)}
## Intended use and limits

Representations for research on emotion and paralinguistics in speech. Trained on English speech;
behaviour on other languages and recording conditions is untested. Not for decisions about people.
"""


# ------------------------------------------------------------------------------------- push
def make_api(token: Optional[str] = None):
    """The Hub client; tests replace this function with one returning a recording stand-in."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def folder_kind(folder: Path) -> str:
    config = folder / "config.json"
    if not config.is_file():
        raise PushError(f"{folder}: no config.json; push an exported classifier (care-superb export-classifier) "
                        f"or a CARE upstream folder (care-pretrain export)")
    try:
        d = json.loads(config.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PushError(f"{config}: not valid JSON ({e})") from None
    from care_superb.classifier import FORMAT

    return "classifier" if isinstance(d, dict) and d.get("format") == FORMAT else "upstream"


def plan_upload(folder: Path, repo_id: str, results: Sequence[Path] = ()) -> Dict[str, Any]:
    """What would be uploaded: {"files": {path_in_repo: local path}, "card": text, "left_out": [...]}."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PushError(f"{folder}: not a folder")
    kind = folder_kind(folder)
    files = {p.name: p for pattern in UPLOADED for p in sorted(folder.glob(pattern)) if p.is_file()}
    if not any(name.endswith(".safetensors") for name in files):
        raise PushError(f"{folder}: no .safetensors weights to push")
    left_out = sorted(p.name for p in folder.iterdir() if p.name not in files and p.name != "README.md")
    if kind == "classifier":
        from care_superb.classifier import ClassifierConfig

        cfg = ClassifierConfig.from_dict(json.loads((folder / "config.json").read_text()), str(folder / "config.json"))
        if not cfg.upstream.embedded and cfg.upstream.ckpt:
            print(f"[push] - note: {folder} does not embed its upstream weights ({cfg.upstream.spec}); users "
                  f"will need them too (export with --include-upstream to share one self-contained folder)",
                  file=sys.stderr)
        card = classifier_card(cfg, repo_id)
    else:
        card = upstream_card(folder, json.loads((folder / "config.json").read_text()), repo_id, results)
    return {"kind": kind, "files": files, "card": card, "left_out": left_out}


def push(folder: Path, repo_id: str, *, private: bool = False, revision: Optional[str] = None,
         token: Optional[str] = None, results: Sequence[Path] = (), message: Optional[str] = None, api=None):
    """Create the repo if needed and upload the folder's data files and a generated card in one commit."""
    from care_upstream.hub import is_repo_id

    if not is_repo_id(repo_id) or "@" in repo_id:
        raise PushError(f"{repo_id!r}: expected a Hub repo id like org/name")
    plan = plan_upload(folder, repo_id, results)
    from huggingface_hub import CommitOperationAdd

    api = api or make_api(token)
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in plan["files"].items()]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=plan["card"].encode("utf-8")))
    info = api.create_commit(repo_id=repo_id, operations=ops, revision=revision, repo_type="model",
                             commit_message=message or f"Upload {plan['kind']} from care-superb")
    return plan, info


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="care-superb push",
        description="Upload a CARE upstream folder or an exported classifier to the Hugging Face Hub with a "
                    "generated model card (tags s3prl, speech-emotion-recognition, care, and the metrics). Only "
                    "config.json and *.safetensors are uploaded. Log in first (`huggingface-cli login`) or pass --token.")
    p.add_argument("folder", type=Path, help="classifier folder (care-superb export-classifier) or upstream folder")
    p.add_argument("repo_id", help="Hub repo id, org/name (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to commit to (default: main)")
    p.add_argument("--token", help="Hub token (default: the one saved by huggingface-cli login)")
    p.add_argument("--results", type=Path, nargs="*", default=[],
                   help="for an upstream folder: results.json files of runs whose metrics go into the card")
    p.add_argument("--message", help="commit message")
    p.add_argument("--dry-run", action="store_true", help="print the card and the files, upload nothing")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if args.dry_run:
            plan = plan_upload(args.folder, args.repo_id, args.results)
            print(plan["card"])
            print("files: " + ", ".join(plan["files"]) + " + README.md")
            return
        plan, info = push(args.folder, args.repo_id, private=args.private, revision=args.revision,
                          token=args.token, results=args.results, message=args.message)
    except (PushError, FileNotFoundError) as e:
        print(f"care-superb push: {e}", file=sys.stderr)
        raise SystemExit(2)
    except Exception as e:  # network, authentication or Hub-side refusal: the Hub's own first line
        from huggingface_hub.errors import HfHubHTTPError

        if not isinstance(e, (HfHubHTTPError, OSError)):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"care-superb push: upload of {args.folder} to {args.repo_id} failed: {first}", file=sys.stderr)
        raise SystemExit(1)
    if plan["left_out"]:
        print(f"[push] - not uploaded (only config.json, *.safetensors and the card are): "
              f"{', '.join(plan['left_out'])}", file=sys.stderr)
    print(f"pushed {', '.join(plan['files'])} + README.md to {args.repo_id}: {getattr(info, 'commit_url', info)}")
