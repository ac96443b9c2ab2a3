"""A trained probe as one object: upstream + s3prl Featurizer (layer weights) + `ProbeHead`.

Two sources give the same object. An s3prl experiment folder (``result/downstream/<exp>``) holds
the run's args, config and the Featurizer/Downstream states in ``dev-best.ckpt``; rebuilding the
upstream with the same hub call and running the same modules in the same order is what makes
``care-superb predict`` reproduce ``-m evaluate`` exactly. An exported classifier folder
(``config.json`` + ``model.safetensors`` + ``README.md``) is the shareable form: the checkpoint's
pickled optimizer and args are dropped, nothing but tensors and JSON is read back.

    from care_superb import EmotionClassifier
    clf = EmotionClassifier.from_pretrained("result/downstream/cafe_care")   # or an exported folder, or org/name
    clf.predict("a.wav")   # Prediction(label="happy", probabilities={...})
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from care_core import atomic
from care_core.constants import SAMPLE_RATE

FORMAT = "care-superb-classifier"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
DEFAULT_CHECKPOINT = "dev-best.ckpt"
# Hub names whose weights are a CARE model: the ones --include-upstream can embed.
CARE_HUBS = ("care", "care_acoustic", "care_semantic", "care_random_base", "care_random_tiny")

AudioInput = Union[str, os.PathLike, np.ndarray, torch.Tensor]


class ClassifierError(ValueError):
    """A run or classifier folder that cannot be turned into a classifier; the message names it."""


# ----------------------------------------------------------------------------------- config
@dataclass
class UpstreamInfo:
    """The upstream as s3prl's runner built it: ``-u hub`` with ``-k ckpt`` (a path or Hub id)."""

    hub: str
    ckpt: Optional[str] = None
    model_config: Optional[str] = None
    embedded: bool = False  # the upstream's state is in model.safetensors under "upstream."
    care_config: Optional[Dict[str, Any]] = None  # set when a CARE model is embedded

    @property
    def spec(self) -> str:
        """The sweep's spelling: ``hub`` or ``hub:ckpt`` (what `care-superb extract --upstream` takes)."""
        return self.hub if not self.ckpt else f"{self.hub}:{self.ckpt}"


@dataclass
class FeaturizerInfo:
    """s3prl `Featurizer` arguments; `layer_weights` are the softmax-normalised weights, for reading."""

    feature_selection: str = "hidden_states"
    layer_selection: Optional[int] = None
    normalize: bool = False
    layer_num: int = 1
    output_dim: int = 0
    downsample_rate: int = 0
    layer_weights: Optional[List[float]] = None


@dataclass
class ProbeInfo:
    input_dim: int
    hidden: int
    n_outputs: int
    dropout: float = 0.0


@dataclass
class AudioRules:
    """The run's audio rules: mono at `sample_rate`, first `max_seconds` kept, zero-padded to `min_seconds`."""

    sample_rate: int = SAMPLE_RATE
    max_seconds: Optional[float] = 30.0
    min_seconds: Optional[float] = 1.0
    batch_size: int = 32


@dataclass
class ClassifierConfig:
    task: str
    kind: str  # classification | regression
    labels: List[str]
    targets: List[str]
    corpus: str
    fold: str
    upstream: UpstreamInfo
    featurizer: FeaturizerInfo
    probe: ProbeInfo
    audio: AudioRules
    source: Dict[str, Any] = field(default_factory=dict)  # run folder, checkpoint, step
    metrics: Dict[str, Any] = field(default_factory=dict)  # results.json entries (dev_best, test)
    training: Dict[str, Any] = field(default_factory=dict)  # runner/optimizer/datarc/modelrc of the run
    format: str = FORMAT
    version: int = FORMAT_VERSION

    @property
    def outputs(self) -> List[str]:
        return list(self.labels) if self.kind == "classification" else list(self.targets)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], source: str = "config") -> "ClassifierConfig":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ClassifierError(f"{source}: not a care-superb classifier config (no \"format\": \"{FORMAT}\")")
        if int(d.get("version", 0)) > FORMAT_VERSION:
            raise ClassifierError(f"{source}: classifier format version {d['version']} is newer than this "
                                  f"care-superb reads ({FORMAT_VERSION}); upgrade care-superb")
        try:
            d = dict(d)
            d["upstream"] = UpstreamInfo(**d["upstream"])
            d["featurizer"] = FeaturizerInfo(**d["featurizer"])
            d["probe"] = ProbeInfo(**d["probe"])
            d["audio"] = AudioRules(**d["audio"])
            return cls(**d)
        except (KeyError, TypeError) as e:
            raise ClassifierError(f"{source}: malformed classifier config ({e})") from None


@dataclass
class Prediction:
    """One file's (or window's) output: `label` + `probabilities` (classification) or `values` (regression)."""

    label: Optional[str] = None
    probabilities: Dict[str, float] = field(default_factory=dict)
    values: Dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------- building blocks
def build_hub_upstream(hub_name: str, ckpt: Optional[str], model_config: Optional[str] = None,
                       device: str = "cpu", what: str = "upstream"):
    """The s3prl hub call of `Runner._get_upstream` (CARE and handcrafted entries registered first).

    A checkpoint path that no longer exists is reported here, in one sentence, instead of as an
    s3prl assertion deep inside the expert.
    """
    from care_superb.s3prl_registry import register
    from care_upstream.hub import is_repo_id

    register()
    from s3prl import hub

    if not hasattr(hub, hub_name):
        raise ClassifierError(f"{what}: unknown s3prl upstream {hub_name!r}")
    if ckpt and not Path(ckpt).expanduser().exists() and not is_repo_id(ckpt):
        raise ClassifierError(f"{what}: the upstream weights {ckpt} (-u {hub_name} -k {ckpt}) do not exist; "
                              f"pass them with --upstream-ckpt PATH (upstream_ckpt= in Python)")
    upstream = getattr(hub, hub_name)(ckpt=ckpt, model_config=model_config, refresh=False)
    return upstream.to(device).eval()


def build_featurizer(upstream, info: FeaturizerInfo, device: str = "cpu"):
    from s3prl.upstream.interfaces import Featurizer

    return Featurizer(upstream=upstream, feature_selection=info.feature_selection,
                      layer_selection=info.layer_selection, upstream_device=device,
                      normalize=info.normalize).to(device).eval()


def _softmax_list(w: torch.Tensor) -> List[float]:
    return F.softmax(w.detach().float().cpu(), dim=-1).tolist()


def _probe_from_state(state: Dict[str, torch.Tensor], dropout: float, source: str):
    from downstream_tasks.probe import ProbeHead

    try:
        w0, w2 = state["mlp.0.weight"], state["mlp.3.weight"]
    except KeyError:
        raise ClassifierError(f"{source}: no probe weights (expected mlp.0.* and mlp.3.* of ProbeHead)") from None
    probe = ProbeHead(w0.shape[1], w2.shape[0], hidden=w0.shape[0], dropout=dropout)
    missing, unexpected = probe.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ClassifierError(f"{source}: probe weights do not match ProbeHead: missing {missing}, "
                              f"unexpected {unexpected}")
    return probe.eval()


def _results_metrics(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / "results.json"
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text())
    except ValueError:
        return {}
    keep = {}
    for split in ("dev_best", "dev", "test"):
        entry = results.get(split)
        if isinstance(entry, dict):
            keep[split] = {k: entry.get(k) for k in ("step", "n", "metrics", "reference", "participant") if k in entry}
    return keep


# ------------------------------------------------------------------------------ classifier
class EmotionClassifier(torch.nn.Module):
    """Upstream → Featurizer (weighted layer sum) → probe, in eval mode, as s3prl's runner evaluates."""

    def __init__(self, config: ClassifierConfig, upstream, featurizer, probe, device: str = "cpu"):
        super().__init__()
        self.config = config
        self.upstream = upstream
        self.featurizer = featurizer
        self.probe = probe
        self.device = device
        self.eval()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path_or_repo_id: Union[str, os.PathLike], revision: Optional[str] = None,
                        device: str = "cpu", upstream_ckpt: Optional[str] = None,
                        checkpoint: str = DEFAULT_CHECKPOINT) -> "EmotionClassifier":
        """An exported classifier folder, a Hugging Face Hub id (``org/name[@rev]``) of one, an s3prl
        run folder (its `checkpoint`, default dev-best.ckpt) or a run's ``.ckpt`` file.

        `upstream_ckpt` replaces the upstream weights path the run or export recorded (moved files).
        """
        from care_upstream.hub import resolve

        path = resolve(str(path_or_repo_id), revision)
        if path.is_file() and path.suffix == ".ckpt":
            return cls.from_run(path, device=device, upstream_ckpt=upstream_ckpt)
        if not path.is_dir():
            raise ClassifierError(f"{path}: expected a classifier folder, an s3prl run folder or a .ckpt file")
        if (path / CONFIG_NAME).is_file():
            return cls._from_folder(path, device, upstream_ckpt)
        if list(path.glob("*.ckpt")) or (path / "results.json").is_file():
            return cls.from_run(path, checkpoint=checkpoint, device=device, upstream_ckpt=upstream_ckpt)
        raise ClassifierError(f"{path}: neither a classifier folder ({CONFIG_NAME} + {WEIGHTS_NAME}) nor an "
                              f"s3prl run folder (*.ckpt)")

    @classmethod
    def from_run(cls, run: Union[str, os.PathLike], checkpoint: str = DEFAULT_CHECKPOINT, device: str = "cpu",
                 upstream_ckpt: Optional[str] = None) -> "EmotionClassifier":
        """Rebuild the evaluated model of an s3prl experiment: the run's hub call, Featurizer and probe."""
        from downstream_tasks.expert import load_checkpoint_safely
        from downstream_tasks.protocol import get_task

        run = Path(run)
        ckpt_path = run if run.is_file() else run / checkpoint
        run_dir = ckpt_path.parent
        if not ckpt_path.is_file():
            have = sorted(p.name for p in run_dir.glob("*.ckpt")) if run_dir.is_dir() else []
            hint = f"it holds {', '.join(have)}; pick one with --checkpoint" if have else \
                ("train it first (run_downstream.py -m train) or point at the experiment folder that was trained; "
                 "a sweep's fast-path cell keeps no checkpoint, its --stock cells do")
            raise ClassifierError(f"{run}: no checkpoint {ckpt_path.name} ({hint})")
        try:
            ckpt = load_checkpoint_safely(ckpt_path)
        except Exception as e:
            raise ClassifierError(f"{ckpt_path}: not a readable s3prl checkpoint "
                                  f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
        for key in ("Args", "Config", "Downstream"):
            if key not in ckpt:
                raise ClassifierError(f"{ckpt_path}: not an s3prl experiment checkpoint (no {key!r})")
        args, config = ckpt["Args"], ckpt["Config"]
        datarc = dict(config["downstream_expert"]["datarc"])
        modelrc = dict(config["downstream_expert"].get("modelrc") or {})
        task = datarc.get("task") or args.downstream
        try:
            spec = get_task(task)
        except KeyError:
            raise ClassifierError(f"{ckpt_path}: task {task!r} is not one of this project's tasks") from None
        fold = datarc.get("test_fold") or getattr(args, "downstream_variant", None) or "fold1"

        hub_ckpt = upstream_ckpt or args.upstream_ckpt
        upstream = build_hub_upstream(args.upstream, hub_ckpt, args.upstream_model_config, device,
                                      what=f"run {run_dir}")
        if ckpt.get("Upstream"):  # a fine-tuned upstream (-f) saves its state; a frozen one does not
            upstream.load_state_dict(ckpt["Upstream"])
        finfo = FeaturizerInfo(feature_selection=args.upstream_feature_selection,
                               layer_selection=args.upstream_layer_selection,
                               normalize=bool(args.upstream_feature_normalize))
        featurizer = build_featurizer(upstream, finfo, device)
        if ckpt.get("Featurizer"):
            featurizer.load_state_dict(ckpt["Featurizer"])
        finfo.layer_num = int(getattr(featurizer, "layer_num", 1))
        finfo.output_dim = int(featurizer.output_dim)
        finfo.downsample_rate = int(featurizer.downsample_rate)
        if hasattr(featurizer, "weights"):
            finfo.layer_weights = _softmax_list(featurizer.weights)

        probe_state = {k[len("probe."):]: v for k, v in ckpt["Downstream"].items() if k.startswith("probe.")}
        probe = _probe_from_state(probe_state, float(modelrc.get("dropout", 0.0)), str(ckpt_path)).to(device)
        pinfo = ProbeInfo(input_dim=probe.mlp[0].in_features, hidden=probe.mlp[0].out_features,
                          n_outputs=probe.mlp[3].out_features, dropout=float(modelrc.get("dropout", 0.0)))
        if pinfo.n_outputs != spec.n_outputs or pinfo.input_dim != finfo.output_dim:
            raise ClassifierError(f"{ckpt_path}: probe is {pinfo.input_dim} -> {pinfo.n_outputs} but the rebuilt "
                                  f"upstream gives {finfo.output_dim} dims and task {task} has {spec.n_outputs} outputs")
        from downstream_tasks.audio import AudioConfig

        crop_pad = AudioConfig.from_datarc(datarc)
        audio = AudioRules(max_seconds=crop_pad.max_seconds, min_seconds=crop_pad.min_seconds,
                           batch_size=int(datarc.get("eval_batch_size", datarc.get("batch_size", 32))))
        training = {"runner": config.get("runner", {}), "optimizer": config.get("optimizer", {}),
                    "datarc": datarc, "modelrc": modelrc, "seed": getattr(args, "seed", None),
                    "upstream_trainable": bool(getattr(args, "upstream_trainable", False))}
        cfg = ClassifierConfig(
            task=task, kind=spec.kind, labels=list(spec.labels), targets=list(spec.targets), corpus=spec.corpus,
            fold=fold, upstream=UpstreamInfo(hub=args.upstream, ckpt=hub_ckpt, model_config=args.upstream_model_config),
            featurizer=finfo, probe=pinfo, audio=audio,
            source={"run": str(run_dir), "checkpoint": ckpt_path.name, "step": ckpt.get("Step")},
            metrics=_results_metrics(run_dir), training=_jsonable(training))
        clf = cls(cfg, upstream, featurizer, probe, device)
        clf._upstream_state_saved = bool(ckpt.get("Upstream"))
        return clf

    @classmethod
    def _from_folder(cls, folder: Path, device: str, upstream_ckpt: Optional[str]) -> "EmotionClassifier":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
        except ValueError as e:
            raise ClassifierError(f"{folder / CONFIG_NAME}: not valid JSON ({e})") from None
        if isinstance(raw, dict) and raw.get("format") != FORMAT and (folder / WEIGHTS_NAME).is_file():
            raise ClassifierError(f"{folder}: an upstream folder (its config.json is not a classifier's), not a "
                                  f"trained classifier; train a probe on it (run_downstream.py -u care -k {folder}) "
                                  f"or take its embeddings (care-superb extract --upstream care:{folder})")
        cfg = ClassifierConfig.from_dict(raw, str(folder / CONFIG_NAME))
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise ClassifierError(f"{folder}: classifier folder lacks {WEIGHTS_NAME}")
        try:
            state = load_file(str(weights), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise ClassifierError(f"{weights}: unreadable safetensors ({e})") from None
        up = cfg.upstream
        if up.embedded:
            upstream = cls._embedded_upstream(up, state, weights).to(device).eval()
        else:
            ckpt = upstream_ckpt or up.ckpt
            if ckpt and not Path(ckpt).expanduser().exists():
                from care_upstream.hub import is_repo_id

                if not is_repo_id(ckpt):
                    raise ClassifierError(
                        f"{folder}: the classifier needs the upstream weights {ckpt} (-u {up.hub}), which do not "
                        f"exist here; pass upstream_ckpt= / --upstream-ckpt PATH, or re-export with --include-upstream")
            upstream = build_hub_upstream(up.hub, ckpt, up.model_config, device, what=f"classifier {folder}")
        featurizer = build_featurizer(upstream, cfg.featurizer, device)
        if "featurizer.weights" in state:
            if not hasattr(featurizer, "weights") or featurizer.weights.shape != state["featurizer.weights"].shape:
                raise ClassifierError(f"{weights}: {state['featurizer.weights'].numel()} layer weights, but the "
                                      f"upstream {up.spec} gives {getattr(featurizer, 'layer_num', 1)} layers")
            featurizer.load_state_dict({"weights": state["featurizer.weights"]})
        if int(featurizer.output_dim) != cfg.probe.input_dim:
            raise ClassifierError(f"{folder}: the probe takes {cfg.probe.input_dim} dims but upstream {up.spec} "
                                  f"gives {featurizer.output_dim}: wrong upstream weights?")
        probe_state = {k[len("probe."):]: v for k, v in state.items() if k.startswith("probe.")}
        probe = _probe_from_state(probe_state, cfg.probe.dropout, str(weights)).to(device)
        return cls(cfg, upstream, featurizer, probe, device)

    @staticmethod
    def _embedded_upstream(up: UpstreamInfo, state: Dict[str, torch.Tensor], weights: Path):
        from care_upstream.config import CareConfig
        from care_upstream.expert import UpstreamExpert
        from care_upstream.model import CARE

        if up.hub not in CARE_HUBS or not up.care_config:
            raise ClassifierError(f"{weights}: embedded upstream {up.hub!r} is not a CARE model")
        variant = up.hub if up.hub in ("care", "care_acoustic", "care_semantic") else "care"
        care_state = {k[len("upstream.model."):]: v for k, v in state.items() if k.startswith("upstream.model.")}
        if not care_state:
            raise ClassifierError(f"{weights}: config says the CARE weights are embedded, but there are no "
                                  f"upstream.model.* tensors")
        model = CARE(CareConfig.from_dict(up.care_config))
        missing, unexpected = model.load_state_dict(care_state, strict=False)
        if missing or unexpected:
            raise ClassifierError(f"{weights}: embedded CARE weights do not match its config: missing "
                                  f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        return UpstreamExpert(model.eval(), variant=variant)

    # ------------------------------------------------------------------ export
    def save_pretrained(self, out: Union[str, os.PathLike], include_upstream: bool = False,
                        card: Optional[str] = None) -> Path:
        """Write config.json, model.safetensors and README.md (atomic each) into `out`."""
        from safetensors.torch import save_file

        out = Path(out)
        cfg = ClassifierConfig.from_dict(self.config.to_dict())
        state: Dict[str, torch.Tensor] = {f"probe.{k}": v for k, v in self.probe.state_dict().items()}
        if hasattr(self.featurizer, "weights"):
            state["featurizer.weights"] = self.featurizer.weights.detach()
        trained_upstream = getattr(self, "_upstream_state_saved", False)
        # A classifier loaded with embedded weights keeps them: its recorded upstream path may not exist.
        if include_upstream or trained_upstream or cfg.upstream.embedded:
            if cfg.upstream.hub not in CARE_HUBS:
                raise ClassifierError(
                    f"--include-upstream embeds CARE weights; upstream {cfg.upstream.hub!r} is not CARE "
                    + ("(and the run fine-tuned it, so its weights are needed: not supported)" if trained_upstream
                       else "(leave the flag off: the classifier records its upstream spec instead)"))
            model = self.upstream.model
            state.update({f"upstream.model.{k}": v for k, v in model.state_dict().items()})
            cfg.upstream.embedded = True
            cfg.upstream.care_config = model.config.to_dict()
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        out.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(out / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": FORMAT})
        atomic.write_json(out / CONFIG_NAME, cfg.to_dict())
        if card is None:
            from care_superb.hub_push import classifier_card

            card = classifier_card(cfg)
        atomic.write_text(out / CARD_NAME, card)
        return out

    # ------------------------------------------------------------------ inference
    def load_audio(self, path: Union[str, os.PathLike]) -> torch.Tensor:
        """A file as the run saw it: mono, resampled, cropped/padded by the run's audio rules."""
        from downstream_tasks.audio import AudioConfig, load_audio

        a = self.config.audio
        return load_audio(path, AudioConfig(a.sample_rate, a.max_seconds, a.min_seconds))

    def crop_or_pad(self, wav: torch.Tensor) -> torch.Tensor:
        from downstream_tasks.audio import AudioConfig, crop_or_pad

        a = self.config.audio
        return crop_or_pad(wav, AudioConfig(a.sample_rate, a.max_seconds, a.min_seconds))

    @torch.no_grad()
    def forward(self, wavs: Sequence[Union[np.ndarray, torch.Tensor]]) -> torch.Tensor:
        """(B, n_outputs) probe outputs (logits, or regression values) for 16 kHz mono waveforms,
        computed as `Runner.evaluate` does: upstream(wavs) → Featurizer(wavs, features) → probe."""
        wavs = [torch.FloatTensor(np.asarray(w, dtype=np.float32)).to(self.device) for w in wavs]
        features = self.upstream(wavs)
        features = self.featurizer(wavs, features)
        return self.probe(list(features))

    def to_predictions(self, outputs: torch.Tensor) -> List[Prediction]:
        outputs = outputs.detach().float().cpu()
        if self.config.kind == "classification":
            probs = F.softmax(outputs, dim=-1)
            labels = self.config.labels
            return [Prediction(label=labels[int(o.argmax())], probabilities=dict(zip(labels, p.tolist())))
                    for o, p in zip(outputs, probs)]
        return [Prediction(values=dict(zip(self.config.targets, o.tolist()))) for o in outputs]

    def predict(self, audio: Union[AudioInput, Sequence[AudioInput]]) -> Union[Prediction, List[Prediction]]:
        """A label and class probabilities (or V/A/D values) for a file path or a 16 kHz mono waveform;
        a list in, a list out (one forward pass per `audio.batch_size` items)."""
        single = isinstance(audio, (str, os.PathLike, np.ndarray, torch.Tensor))
        items = [audio] if single else list(audio)
        wavs = [self.load_audio(x) if isinstance(x, (str, os.PathLike))
                else self.crop_or_pad(torch.as_tensor(np.asarray(x, dtype=np.float32)).flatten()) for x in items]
        preds: List[Prediction] = []
        bs = max(1, self.config.audio.batch_size)
        for i in range(0, len(wavs), bs):
            preds += self.to_predictions(self(wavs[i:i + bs]))
        return preds[0] if single else preds


def _jsonable(x: Any) -> Any:
    """Config values as JSON keeps them (tuples → lists; anything else exotic → its str)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)
