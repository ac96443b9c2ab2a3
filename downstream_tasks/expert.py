"""The one s3prl `DownstreamExpert` for every task of this project.

s3prl's runner builds it as ``DownstreamExpert(upstream_dim, upstream_rate, **config, **vars(args))``,
so it sees ``downstream_expert`` (datarc/modelrc), ``expdir``, ``runner``, and the command-line
args (``downstream``, ``downstream_variant``, ``init_ckpt``, ``mode``...). Each task package
``downstream_tasks/<task>/expert.py`` only re-exports this class.

datarc keys: ``task`` (defaults to ``-d``), ``manifest_dir`` (folder written by ``care-superb
prepare``; relative paths are resolved from the working directory), ``test_fold`` (``fold1``...;
``-v`` is accepted too), ``batch_size``, ``eval_batch_size``, ``num_workers``, ``max_seconds``,
``min_seconds``, ``seed``, ``epochs`` and ``steps_from_epochs``. modelrc: ``hidden``, ``dropout``,
``regression_loss`` (``ccc`` = 1 − mean CCC, the paper's objective for MSP-IMPROV; or ``mse``).

Training length: the protocol trains 50 epochs, the runner counts steps. Each config.yaml sets
``runner.total_steps = 50 * ceil(table_train_size / 32)``. Fold sizes differ (EmoDB), so the expert
computes ``epochs * ceil(n_train / batch_size)`` for the fold at hand and warns when it differs; with
``steps_from_epochs: true`` it writes that value into ``runner.total_steps`` itself (the runner
reads it only when training starts, after building the expert).

Outputs in ``expdir`` after each evaluation of split S (dev during training, test with ``-m evaluate``):

* ``results.json`` — merged per split: ``{"task", "fold", "kind", "labels", "targets", "primary",
  S: {"step", "n", "metrics", "reference", ["participant",] "label_order", "confusion", "layer_weights",
  "layer_weights_from"}, "dev_best": {... the dev entry of the best step ...}}``. Metric keys:
  ``weighted_f1``, ``uar``, ``accuracy``, ``loss`` (classification); ``ccc_valence``,
  ``ccc_arousal``, ``ccc_dominance``, ``ccc_mean``, ``loss`` (regression). ``reference`` is what a
  probe that learnt nothing scores on S (`metrics.reference_scores`: chance UAR 1/K and the train
  majority class's weighted F1, accuracy and UAR; for regression the CCC of the train mean, 0).
  ``participant`` (DAIC-WOZ) holds one decision per interview by majority vote and by mean
  probability over its segments (`metrics.participant_scores`).
* ``confusion_<S>.png`` and ``confusion.png`` (the latest evaluation), ``layer_weights.png``,
  ``<S>_<fold>_predictions.csv``; TensorBoard scalars ``<task>-<fold>/<S>-<metric>``.

Layer weights: the runner never shows the Featurizer to the expert, so they are read from a saved
checkpoint: with ``-m evaluate -e CKPT`` exactly the evaluated one (``init_ckpt``); during training
the newest ``dev-best.ckpt`` / ``states-*.ckpt`` in ``expdir``, i.e. as of the previous save
(recorded in ``layer_weights_from``). Checkpoints are read with ``torch.load(weights_only=True)``,
allow-listing only ``argparse.Namespace`` (s3prl stores its args there).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed import is_initialized
from torch.utils.data import DataLoader, DistributedSampler

from care_core import atomic
from downstream_tasks import metrics, plots
from downstream_tasks.audio import AudioConfig
from downstream_tasks.dataset import build_datasets, collate
from downstream_tasks.probe import ProbeHead, ccc_loss
from downstream_tasks.protocol import get_task

RESULTS = "results.json"


def load_checkpoint_safely(path) -> dict:
    """torch.load with weights_only=True, allowing the one non-tensor class s3prl checkpoints hold."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(str(path), map_location="cpu", weights_only=True)


def featurizer_weights(ckpt: dict) -> Optional[List[float]]:
    state = ckpt.get("Featurizer") or {}
    w = state.get("weights")
    if w is None:
        return None
    return F.softmax(w.float(), dim=-1).tolist()


#: Pooled features whose spread across utterances is below this fraction of their frame-level spread
#: carry no utterance identity: the probe can learn only the class prior.
DEGENERATE_RATIO = 1e-4
#: Training batches checked for it at the start of a run.
DEGENERATE_CHECK_BATCHES = 20


def degenerate_pooling(features: List[torch.Tensor], ratio: float = DEGENERATE_RATIO) -> bool:
    """True when mean pooling gives (near) the same vector for every utterance of the batch.

    That is what per-utterance mean/variance normalised frames do (s3prl's ``fbank`` and ``mfcc``):
    every utterance's time mean is the zero vector. Needs two utterances to compare."""
    if len(features) < 2:
        return False
    with torch.no_grad():
        pooled = torch.stack([f.detach().float().mean(dim=0) for f in features])
        frames = torch.cat([f.detach().float() for f in features])
        across = pooled.std(dim=0).max().item()
        within = frames.std(dim=0).max().item() if len(frames) > 1 else 0.0
    return across <= ratio * within or across == 0.0


def degenerate_warning(upstream: Optional[str], n: int) -> str:
    name = f"upstream {upstream!r}" if upstream else "this upstream"
    return (f"[Expert] - WARNING: the mean-pooled features of a training batch are identical across its {n} "
            f"utterances ({name}). Its frames are normalised per utterance (zero time-mean), so mean pooling "
            f"leaves the probe nothing but the class prior and every score will sit at chance. Use an upstream "
            f"without per-utterance normalisation (e.g. -u egemaps, -u compare, or an SSL model).")


class DownstreamExpert(nn.Module):
    def __init__(self, upstream_dim: int, downstream_expert: dict, expdir: str, **kwargs):
        super().__init__()
        self.datarc = dict(downstream_expert["datarc"])
        self.modelrc = dict(downstream_expert.get("modelrc") or {})
        self.expdir = Path(expdir)
        self.task = self.datarc.get("task") or kwargs.get("downstream")
        self.spec = get_task(self.task)
        self.fold = self.datarc.get("test_fold") or kwargs.get("downstream_variant") or "fold1"
        self.seed = int(self.datarc.get("seed", 0))
        self.init_ckpt = kwargs.get("init_ckpt")
        audio = AudioConfig.from_datarc(self.datarc)
        self.datasets = build_datasets(self.datarc["manifest_dir"], self.spec, self.fold, audio)
        print(f"[Expert] - {self.task} {self.fold}: " + ", ".join(
            f"{s} {len(d)}" for s, d in self.datasets.items()), file=sys.stderr)
        self._check_total_steps(kwargs.get("runner"))

        self.probe = ProbeHead(upstream_dim, self.spec.n_outputs, hidden=int(self.modelrc.get("hidden", 256)),
                               dropout=float(self.modelrc.get("dropout", 0.0)))
        self.regression_loss = self.modelrc.get("regression_loss", "ccc")
        if self.regression_loss not in ("ccc", "mse"):
            raise ValueError(f"modelrc.regression_loss must be ccc or mse, got {self.regression_loss!r}")
        # Saved with the Downstream state, so a resumed run keeps its best dev score.
        self.register_buffer("best_score", torch.full((1,), -math.inf))
        self.upstream_name = kwargs.get("upstream")
        self._degenerate_checks = 0

    # ----------------------------------------------------------------------------- setup
    def _check_total_steps(self, runner: Optional[dict]) -> None:
        epochs = self.datarc.get("epochs")
        if not epochs or runner is None:
            return
        steps = self.spec.total_steps(len(self.datasets["train"]), int(epochs), int(self.datarc["batch_size"]))
        if self.datarc.get("steps_from_epochs"):
            runner["total_steps"] = steps
            print(f"[Expert] - total_steps set to {steps} = {epochs} epochs of this fold", file=sys.stderr)
        elif runner.get("total_steps") != steps:
            print(f"[Expert] - note: {epochs} epochs of this fold is {steps} steps, the config says "
                  f"{runner.get('total_steps')} (datarc.steps_from_epochs=True uses {steps})", file=sys.stderr)

    def get_downstream_name(self) -> str:
        return f"{self.task}-{self.fold}"

    def get_dataloader(self, mode: str, epoch: int = 0) -> DataLoader:
        if mode not in self.datasets:
            raise ValueError(f"unknown split {mode!r}; expected one of {list(self.datasets)}")
        ds = self.datasets[mode]
        workers = int(self.datarc.get("num_workers", 0))
        if mode == "train":
            if is_initialized():
                sampler = DistributedSampler(ds, shuffle=True, seed=self.seed)
                sampler.set_epoch(epoch)
                return DataLoader(ds, batch_size=self.datarc["batch_size"], sampler=sampler,
                                  num_workers=workers, collate_fn=collate)
            generator = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            return DataLoader(ds, batch_size=self.datarc["batch_size"], shuffle=True, generator=generator,
                              num_workers=workers, collate_fn=collate)
        return DataLoader(ds, batch_size=self.datarc.get("eval_batch_size", self.datarc["batch_size"]),
                          shuffle=False, num_workers=workers, collate_fn=collate)

    # --------------------------------------------------------------------------- forward
    def forward(self, mode, features, labels, ids, records, **kwargs):
        """`features`: list of (T_i, D) from the Featurizer (already trimmed to true lengths)."""
        device = features[0].device
        # A degenerate upstream is degenerate on every batch: looking at the first few is enough.
        if mode == "train" and self._degenerate_checks < DEGENERATE_CHECK_BATCHES:
            self._degenerate_checks += 1
            if degenerate_pooling(features):
                self._degenerate_checks = DEGENERATE_CHECK_BATCHES  # warn once per run
                print(degenerate_warning(self.upstream_name, len(features)), file=sys.stderr)
        out = self.probe(list(features))
        if self.spec.kind == "classification":
            target = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
            loss = F.cross_entropy(out, target)
            records["pred"] += out.argmax(dim=-1).cpu().tolist()
            records["prob"] += F.softmax(out.detach().float(), dim=-1).cpu().tolist()
            records["truth"] += target.cpu().tolist()
        else:
            target = torch.as_tensor(np.stack(labels), dtype=torch.float32, device=device)
            loss = ccc_loss(out, target) if self.regression_loss == "ccc" else F.mse_loss(out, target)
            records["pred"] += out.detach().cpu().tolist()
            records["truth"] += target.cpu().tolist()
        records["loss"].append(loss.item())
        records["id"] += list(ids)
        return loss

    # --------------------------------------------------------------------------- logging
    def _report(self, records) -> Tuple[Dict, Optional[List[List[int]]]]:
        if self.spec.kind == "classification":
            labels = list(self.spec.labels)
            t = [labels[i] for i in records["truth"]]
            p = [labels[i] for i in records["pred"]]
            rep = metrics.classification_report(t, p, labels)
            conf = rep.pop("confusion")
        else:
            rep = metrics.regression_report(np.asarray(records["truth"]), np.asarray(records["pred"]),
                                            self.spec.targets)
            conf = None
        rep["loss"] = float(np.mean(records["loss"])) if records["loss"] else float("nan")
        return rep, conf

    def _reference(self, records) -> Dict:
        """Scores of a probe that learnt nothing, on the split just evaluated (see module docstring)."""
        train = self.datasets["train"].rows
        if self.spec.kind == "classification":
            labels = list(self.spec.labels)
            return metrics.reference_scores([r.label for r in train], [labels[i] for i in records["truth"]],
                                             labels)
        train_values = np.asarray([[r.targets[t] for t in self.spec.targets] for r in train])
        return metrics.regression_reference_scores(train_values, np.asarray(records["truth"]), self.spec.targets)

    def _participant(self, mode: str, records) -> Dict:
        """One decision per speaker (DAIC-WOZ: per interview) from the segment probabilities."""
        speaker = {r.id: r.speaker for r in self.datasets[mode].rows}
        labels = list(self.spec.labels)
        positive, negative = labels[1], labels[0]
        return metrics.participant_scores([speaker[i] for i in records["id"]],
                                          [labels[t] for t in records["truth"]],
                                          [p[1] for p in records["prob"]], positive=positive, negative=negative)

    @property
    def primary(self) -> str:
        return "weighted_f1" if self.spec.kind == "classification" else "ccc_mean"

    def _layer_weights(self, mode: str) -> Tuple[Optional[List[float]], Optional[str], Optional[int]]:
        candidates = []
        if mode == "test" and self.init_ckpt and Path(self.init_ckpt).is_file():
            candidates = [Path(self.init_ckpt)]
        else:
            saved = list(self.expdir.glob("states-*.ckpt")) + list(self.expdir.glob("dev-best.ckpt"))
            candidates = sorted(saved, key=lambda p: p.stat().st_mtime, reverse=True)[:1]
            if not candidates and self.init_ckpt and Path(self.init_ckpt).is_file():
                candidates = [Path(self.init_ckpt)]
        for path in candidates:
            try:
                ckpt = load_checkpoint_safely(path)
            except Exception as e:  # a checkpoint being written, or an unexpected pickle
                print(f"[Expert] - cannot read layer weights from {path}: {e}", file=sys.stderr)
                return None, None, None
            return featurizer_weights(ckpt), path.name, ckpt.get("Step")
        return None, None, None

    def _write_predictions(self, mode: str, records) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        if self.spec.kind == "classification":
            w.writerow(["id", "truth", "pred"])
            for i, t, p in zip(records["id"], records["truth"], records["pred"]):
                w.writerow([i, self.spec.labels[t], self.spec.labels[p]])
        else:
            w.writerow(["id", *(f"true_{t}" for t in self.spec.targets), *(f"pred_{t}" for t in self.spec.targets)])
            for i, t, p in zip(records["id"], records["truth"], records["pred"]):
                w.writerow([i, *(f"{x:.4f}" for x in t), *(f"{x:.4f}" for x in p)])
        atomic.write_text(self.expdir / f"{mode}_{self.fold}_predictions.csv", buf.getvalue())

    def _merge_results(self, updates: Dict) -> Dict:
        path = self.expdir / RESULTS
        results = {}
        if path.is_file():
            try:
                results = json.loads(path.read_text())
            except ValueError:
                results = {}
        results.update({"task": self.task, "fold": self.fold, "kind": self.spec.kind,
                        "labels": list(self.spec.labels), "targets": list(self.spec.targets),
                        "primary": self.primary})
        results.update(updates)
        atomic.write_text(path, json.dumps(results, indent=2) + "\n")
        return results

    def log_records(self, mode, records, logger, global_step, **kwargs):
        """Scalars for every mode; for dev/test also results.json and figures. Returns checkpoints to save.

        ``figures=False`` (a keyword s3prl's runner never passes) skips the PNGs: the sweep's fast path
        evaluates dozens of times per cell and wants only the numbers."""
        if not records["loss"]:
            return []
        rep, conf = self._report(records)
        prefix = f"{self.task}-{self.fold}/{mode}"
        for key, value in rep.items():
            logger.add_scalar(f"{prefix}-{key}", value, global_step=global_step)
        if mode == "train":
            return []
        self.expdir.mkdir(parents=True, exist_ok=True)
        weights, weights_from, weights_step = self._layer_weights(mode)
        step = global_step or weights_step
        entry = {"step": step, "n": len(records["id"]), "metrics": rep, "reference": self._reference(records)}
        if self.spec.score_per_participant:
            entry["participant"] = self._participant(mode, records)
        entry.update({"label_order": list(self.spec.labels) or list(self.spec.targets),
                      "confusion": conf, "layer_weights": weights, "layer_weights_from": weights_from})
        updates = {mode: entry}
        save_names = []
        score = rep[self.primary]
        line = f"{mode} step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in rep.items())
        if mode == "dev" and score > self.best_score.item():
            self.best_score.fill_(score)
            save_names.append("dev-best.ckpt")
            updates["dev_best"] = entry
            line += "  (new best)"
        print(f"[Expert] - {line}", file=sys.stderr)
        with open(self.expdir / "log.log", "a") as f:
            f.write(line + "\n")
        self._merge_results(updates)
        self._write_predictions(mode, records)
        title = f"{self.task} {self.fold} {mode} (step {step})"
        if not kwargs.get("figures", True):
            return save_names
        if conf is not None:
            plots.plot_confusion(conf, self.spec.labels, self.expdir / f"confusion_{mode}.png", title)
            plots.plot_confusion(conf, self.spec.labels, self.expdir / "confusion.png", title)
        if weights is not None:
            plots.plot_layer_weights(weights, self.expdir / "layer_weights.png",
                                     f"{self.task} {self.fold} layer weights ({weights_from})")
        return save_names
