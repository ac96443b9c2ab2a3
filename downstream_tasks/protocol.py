"""Task specifications, fold rules and the speaker-overlap check.

A task is a `TaskSpec` in the `TASKS` registry: which corpus parser reads the raw data, which labels
the classifier predicts (in a fixed order that becomes the class index), which *fold rule* splits
the utterances, and whether the metric is classification or regression.

Plugging in a corpus (what the other corpus modules do):

* write ``parse_<corpus>(root) -> list[Utterance]`` in ``downstream_tasks/corpora/<corpus>.py``;
* in the same module register its fold rule under the name the task spec below uses::

      from downstream_tasks.protocol import register_fold_rule

      @register_fold_rule("iemocap_session")
      def iemocap_session(utterances, fold, **params):   # fold is 0-based
          return ["test" if u.extra["session"] == fold + 1 else ... for u in utterances]

  A rule returns one split name per utterance, in order: ``train``, ``dev``, ``test`` or ``-``
  (not used in this fold: e.g. a DAIC-WOZ segment drawn for another run). Rules see only the
  utterances and their ``extra`` dict, so corpus facts a rule needs (session, official split,
  run) go into ``Utterance.extra``.

Parsers are imported lazily from the ``"module:function"`` string in the spec, so this module
imports without any corpus module existing; importing the parser module also registers its rules.

Fold names are ``fold1`` ... ``foldK`` (s3prl's ``datarc.test_fold`` convention); the first fold of
every rule (0-based ``fold=0``) is ``fold1``.
"""

from __future__ import annotations

import importlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from downstream_tasks.corpora.base import CorpusError, Utterance

SPLITS = ("train", "dev", "test")
UNUSED = "-"  # split value for an utterance that takes no part in a fold

FoldRule = Callable[..., List[str]]
FOLD_RULES: Dict[str, FoldRule] = {}


class SpeakerOverlapError(ValueError):
    """A speaker appears in two splits of one fold: results would not be speaker independent."""

    def __init__(self, task: str, fold: str, overlaps: Mapping[Tuple[str, str], Sequence[str]]):
        self.task, self.fold = task, fold
        self.overlaps = {k: sorted(v) for k, v in overlaps.items()}
        parts = [f"{a}/{b}: {', '.join(spk)}" for (a, b), spk in self.overlaps.items()]
        super().__init__(f"task {task} {fold}: speakers in two splits ({'; '.join(parts)})")


@dataclass(frozen=True)
class TaskSpec:
    """Everything the engine needs to turn a raw corpus into a manifest and a probe.

    `labels` is the class order (class index = position); empty for regression.
    `label_map` maps what the parser returns to task labels; utterances whose label is not a key
    are dropped (that is how IEMOCAP-4 keeps 5 of 11 codes). Without a map every parsed label must
    already be in `labels`, otherwise the file is refused.
    `targets` names the regression targets read from ``Utterance.extra`` (rows with a NaN target
    are dropped). `speaker_independent` turns the overlap check on; `test_from_dev` says that the
    test split *is* the dev split (DAIC-WOZ reports dev), so rules only assign train/dev.
    `materialize` ("module:function", optional) runs between parsing and the audio check as
    ``fn(utterances, out_dir, skipped=list) -> utterances``, for corpora whose audio must be
    converted first (MELD's mp4 clips → wav under ``<out>/audio``).
    `total_steps` is 50 epochs at batch 32 for the table's train size: ``50 * ceil(n_train / 32)``.
    `folds_are_draws`: the folds are not different test sets but redraws of the same one (DAIC-WOZ's
    random 10 s segments, fold k = draw k); a sweep then runs seed i on fold i only (`runs_of`).
    `score_per_participant`: results also carry one decision per speaker (DAIC-WOZ's interviews,
    `metrics.participant_scores`).
    """

    name: str
    corpus: str
    parser: str
    fold_rule: str
    n_folds: int
    kind: str = "classification"
    labels: Tuple[str, ...] = ()
    label_map: Optional[Mapping[str, str]] = None
    targets: Tuple[str, ...] = ()
    fold_params: Mapping[str, object] = field(default_factory=dict)
    parser_kwargs: Mapping[str, object] = field(default_factory=dict)
    speaker_independent: bool = True
    test_from_dev: bool = False
    table_train_size: int = 0
    materialize: Optional[str] = None
    folds_are_draws: bool = False
    score_per_participant: bool = False

    def __post_init__(self):
        if self.kind not in ("classification", "regression"):
            raise ValueError(f"task {self.name}: kind must be classification|regression, got {self.kind!r}")
        if self.kind == "classification" and not self.labels:
            raise ValueError(f"task {self.name}: a classification task needs labels")
        if self.kind == "regression" and not self.targets:
            raise ValueError(f"task {self.name}: a regression task needs targets")
        if self.n_folds < 1:
            raise ValueError(f"task {self.name}: n_folds must be >= 1")

    @property
    def fold_names(self) -> List[str]:
        return [f"fold{k + 1}" for k in range(self.n_folds)]

    @property
    def n_outputs(self) -> int:
        return len(self.labels) if self.kind == "classification" else len(self.targets)

    def runs_of(self, folds: Sequence[str], seeds: Sequence[int]) -> List[Tuple[str, int]]:
        """The (fold, seed) runs a sweep makes of this task: every fold with every seed; when the
        folds are redraws (`folds_are_draws`), the i-th seed runs on the i-th fold only, so that
        `--seeds N` gives N different draws (cycling through the folds past the last one)."""
        if not folds:
            raise ValueError(f"task {self.name}: no folds to run")
        if self.folds_are_draws:
            return [(folds[i % len(folds)], seed) for i, seed in enumerate(seeds)]
        return [(fold, seed) for fold in folds for seed in seeds]

    def total_steps(self, n_train: Optional[int] = None, epochs: int = 50, batch_size: int = 32) -> int:
        n = n_train if n_train is not None else self.table_train_size
        return epochs * math.ceil(n / batch_size)


def register_fold_rule(name: str) -> Callable[[FoldRule], FoldRule]:
    """Decorator: make a fold rule available to task specs under `name`."""

    def deco(fn: FoldRule) -> FoldRule:
        if name in FOLD_RULES and FOLD_RULES[name] is not fn:
            # Re-registering the same name from a reloaded module is fine; two different rules are not.
            if getattr(FOLD_RULES[name], "__qualname__", None) != getattr(fn, "__qualname__", None):
                raise ValueError(f"fold rule {name!r} is already registered")
        FOLD_RULES[name] = fn
        return fn

    return deco


def _import_object(spec: str):
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"expected 'module.path:function', got {spec!r}")
    return getattr(importlib.import_module(module_name), attr)


def get_parser(spec: TaskSpec) -> Callable[..., List[Utterance]]:
    return _import_object(spec.parser)


def get_materializer(spec: TaskSpec) -> Optional[Callable[..., List[Utterance]]]:
    return _import_object(spec.materialize) if spec.materialize else None


def get_fold_rule(spec: TaskSpec) -> FoldRule:
    """Find the rule by name; import the parser's module first since that is where corpora register."""
    if spec.fold_rule in FOLD_RULES:
        return FOLD_RULES[spec.fold_rule]
    if ":" in spec.fold_rule:
        return _import_object(spec.fold_rule)
    importlib.import_module(spec.parser.partition(":")[0])
    if spec.fold_rule not in FOLD_RULES:
        raise KeyError(f"task {spec.name}: fold rule {spec.fold_rule!r} is not registered "
                       f"(known: {sorted(FOLD_RULES)})")
    return FOLD_RULES[spec.fold_rule]


# --------------------------------------------------------------------------------------- rules
@register_fold_rule("speaker_rotation")
def speaker_rotation(utterances: Sequence[Utterance], fold: int, *, n_test: int, n_dev: int,
                     **_) -> List[str]:
    """Sorted speakers a; fold k tests a[n_test*k : n_test*(k+1)], validates on the next `n_dev`
    speakers (cyclic), trains on the rest (CaFE 2/2, EmoDB 2/2, RAVDESS-Song 4/3)."""
    speakers = sorted({u.speaker for u in utterances})
    n = len(speakers)
    if n < n_test + n_dev + 1 or n_test * (fold + 1) > n:
        raise ValueError(f"speaker_rotation: {n} speakers cannot give fold {fold + 1} "
                         f"with {n_test} test and {n_dev} dev speakers")
    start = n_test * fold
    test = set(speakers[start:start + n_test])
    dev = {speakers[(start + n_test + i) % n] for i in range(n_dev)}
    return ["test" if u.speaker in test else "dev" if u.speaker in dev else "train" for u in utterances]


@register_fold_rule("extra_split")
def extra_split(utterances: Sequence[Utterance], fold: int, *, key: str = "split", **_) -> List[str]:
    """Official splits carried by the parser in ``extra[key]`` (same for every fold/seed)."""
    out = []
    for u in utterances:
        split = u.extra.get(key)
        if split not in SPLITS + (UNUSED,):
            raise CorpusError(u.path, f"extra[{key!r}] must be one of {SPLITS}, got {split!r}")
        out.append(split)
    return out


# ------------------------------------------------------------------------------------- engine
def apply_labels(spec: TaskSpec, utterances: Sequence[Utterance]) -> Tuple[List[Utterance], Counter]:
    """Map parser labels to task labels; returns kept utterances and a count of dropped raw labels."""
    kept: List[Utterance] = []
    dropped: Counter = Counter()
    for u in utterances:
        if spec.kind == "regression":
            values = [u.extra.get(t) for t in spec.targets]
            if any(v is None for v in values):
                raise CorpusError(u.path, f"missing regression target(s) {spec.targets} in extra")
            if any(isinstance(v, float) and math.isnan(v) for v in values):
                dropped["NaN target"] += 1
                continue
            kept.append(u)
            continue
        raw = u.label
        if raw is None:
            raise CorpusError(u.path, f"no label for classification task {spec.name}")
        if spec.label_map is not None:
            if raw not in spec.label_map:
                dropped[raw] += 1
                continue
            label = spec.label_map[raw]
        else:
            label = raw
        if label not in spec.labels:
            raise CorpusError(u.path, f"label {label!r} is not one of {list(spec.labels)} for task {spec.name}")
        if label != raw:
            u = Utterance(u.id, u.path, u.speaker, label, u.corpus, dict(u.extra))
        kept.append(u)
    return kept, dropped


def assign_folds(spec: TaskSpec, utterances: Sequence[Utterance]) -> Dict[str, List[str]]:
    """Run the task's fold rule for every fold and check the result; returns fold name → splits."""
    rule = get_fold_rule(spec)
    folds: Dict[str, List[str]] = {}
    allowed = {"train", "dev", UNUSED} if spec.test_from_dev else set(SPLITS) | {UNUSED}
    for k, name in enumerate(spec.fold_names):
        splits = list(rule(utterances, k, **dict(spec.fold_params)))
        if len(splits) != len(utterances):
            raise ValueError(f"fold rule {spec.fold_rule} returned {len(splits)} splits for {len(utterances)} utterances")
        bad = set(splits) - allowed
        if bad:
            raise ValueError(f"fold rule {spec.fold_rule} returned split(s) {sorted(bad)} for task {spec.name}")
        for needed in ("train", "dev") if spec.test_from_dev else SPLITS:
            if needed not in splits:
                raise ValueError(f"task {spec.name} {name}: the {needed} split is empty")
        if spec.speaker_independent:
            check_speaker_disjoint(utterances, splits, task=spec.name, fold=name)
        folds[name] = splits
    return folds


def check_speaker_disjoint(utterances: Sequence[Utterance], splits: Sequence[str], *,
                           task: str = "?", fold: str = "?") -> None:
    """Raise `SpeakerOverlapError` naming every speaker found in two splits of this fold."""
    where: Dict[str, set] = defaultdict(set)
    for u, s in zip(utterances, splits):
        if s != UNUSED:
            where[u.speaker].add(s)
    overlaps: Dict[Tuple[str, str], List[str]] = defaultdict(list)
    for spk, ss in where.items():
        ordered = [s for s in SPLITS if s in ss]
        for i in range(len(ordered)):
            for j in range(i + 1, len(ordered)):
                overlaps[(ordered[i], ordered[j])].append(spk)
    if overlaps:
        raise SpeakerOverlapError(task, fold, overlaps)


# -------------------------------------------------------------------------------------- tasks
def _identity(labels: Sequence[str]) -> Dict[str, str]:
    return {label: label for label in labels}


_IEMOCAP4 = ("neutral", "happy", "sad", "angry")
_IEMOCAP6 = ("neutral", "happy", "sad", "angry", "frustrated", "excited")
_IEMOCAP_CODES = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "fru": "frustrated",
                  "exc": "excited"}

TASKS: Dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    TASKS[spec.name] = spec
    return spec


def get_task(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {sorted(TASKS)}") from None


# Acted corpora: the file name carries speaker and label.
register_task(TaskSpec(
    name="emotion_cafe", corpus="cafe", parser="downstream_tasks.corpora.cafe:parse_cafe",
    labels=("neutral", "anger", "disgust", "happiness", "fear", "surprise", "sadness"),
    fold_rule="speaker_rotation", n_folds=5, fold_params={"n_test": 2, "n_dev": 2},
    table_train_size=624))
register_task(TaskSpec(
    name="emotion_emodb", corpus="emodb", parser="downstream_tasks.corpora.emodb:parse_emodb",
    labels=("neutral", "anger", "boredom", "disgust", "fear", "joy", "sadness"),
    fold_rule="speaker_rotation", n_folds=5, fold_params={"n_test": 2, "n_dev": 2},
    table_train_size=324))
register_task(TaskSpec(
    name="emotion_ravdess_song", corpus="ravdess", parser="downstream_tasks.corpora.ravdess:parse_ravdess_song",
    labels=("neutral", "calm", "happy", "sad", "angry", "fearful"),
    fold_rule="speaker_rotation", n_folds=5, fold_params={"n_test": 4, "n_dev": 3},
    table_train_size=704))

# Conversational corpora: parsers and fold rules live in downstream_tasks/corpora/<corpus>.py, which
# must register the fold-rule names used here. Label maps accept raw codes and task names alike.
register_task(TaskSpec(
    name="emotion_iemocap4", corpus="iemocap", parser="downstream_tasks.corpora.iemocap:parse_iemocap",
    labels=_IEMOCAP4,
    label_map={**{c: ("happy" if c == "exc" else n) for c, n in _IEMOCAP_CODES.items() if c != "fru"},
               **_identity(_IEMOCAP4), "excited": "happy"},
    fold_rule="iemocap_session", n_folds=5, table_train_size=4425))
register_task(TaskSpec(
    name="emotion_iemocap6", corpus="iemocap", parser="downstream_tasks.corpora.iemocap:parse_iemocap",
    labels=_IEMOCAP6, label_map={**_IEMOCAP_CODES, **_identity(_IEMOCAP6)},
    fold_rule="iemocap_session", n_folds=5, table_train_size=5947))
register_task(TaskSpec(
    name="emotion_meld", corpus="meld", parser="downstream_tasks.corpora.meld:parse_meld",
    labels=("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"),
    fold_rule="meld_official", n_folds=1, speaker_independent=False, table_train_size=9988,
    materialize="downstream_tasks.corpora.meld:extract_meld_audio"))
register_task(TaskSpec(
    name="sentiment_mosi", corpus="mosi", parser="downstream_tasks.corpora.mosi:parse_mosi",
    labels=("negative", "positive"),
    fold_rule="mosi_standard", n_folds=1, table_train_size=1188))
register_task(TaskSpec(
    name="depression_daicwoz", corpus="daicwoz", parser="downstream_tasks.corpora.daicwoz:parse_daicwoz",
    labels=("not_depressed", "depressed"),
    label_map={"0": "not_depressed", "1": "depressed", "not_depressed": "not_depressed",
               "depressed": "depressed"},
    # Five draws of the random 10 s segments: fold k holds the segments drawn with seed k-1 (the
    # daicwoz_dev rule), so the stock runner's fold1 is draw 0 and a sweep's i-th seed runs draw i.
    parser_kwargs={"seeds": (0, 1, 2, 3, 4)}, folds_are_draws=True, score_per_participant=True,
    fold_rule="daicwoz_dev", n_folds=5, test_from_dev=True, table_train_size=6003))
register_task(TaskSpec(
    name="emotion_mspimprov", corpus="mspimprov", parser="downstream_tasks.corpora.mspimprov:parse_mspimprov",
    kind="regression", targets=("valence", "arousal", "dominance"),
    fold_rule="mspimprov_speaker", n_folds=12, table_train_size=7032))
