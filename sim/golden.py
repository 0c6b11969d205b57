"""The golden model of multi-stage ranking: cascades of (model, keep_k) stages run on the
integer path (bit-exact reference of the RTL) or on the float32 path.

A :class:`Pipeline` is a list of :class:`Stage`. Running one query (one user and its
candidate ids) through it: stage 1 scores every candidate and keeps the best ``keep_k``;
each following stage scores exactly the candidates the previous stage kept, in the order it
kept them, and keeps its own best ``keep_k``. Ranking is by score, higher first, equal
scores by the lower candidate id (:func:`rpaccel.sim.numerics.topk` on the integer path,
the same rule on float scores). The final stage's kept list is the query's ranking.

Everything is validated and fails with a :class:`GoldenError` naming the problem: an
unknown model, ``keep_k <= 0``, a ``keep_k`` larger than the stage's input count, an empty
candidate list, candidate ids out of range or repeated, a model whose dimensions do not
fit the features. Nothing is wrapped or clipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rpaccel.hw.errors import RpaccelError

from . import numerics
from .data import load_movielens
from .features import Features, FeatureError, Split, build_features, split_interactions
from .models import MODEL_NAMES, FloatModel, ModelError, forward_float, train_or_load
from .quant import QuantizedModel, forward_int, quantize_model

__all__ = ["GoldenError", "Stage", "Pipeline", "PIPELINES", "PRECISIONS", "StageResult",
           "CascadeResult", "Golden", "GoldenSetup", "load_golden", "rank_float"]

#: The two numeric paths.
PRECISIONS = ("int8", "float32")


class GoldenError(RpaccelError, ValueError):
    """A bad pipeline, model or query; the message names what is wrong."""


@dataclass(frozen=True)
class Stage:
    model: str
    keep_k: int


@dataclass(frozen=True)
class Pipeline:
    """A named cascade of stages (validated on construction)."""

    name: str
    stages: tuple

    def __post_init__(self):
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise GoldenError(f"pipeline {self.name!r} has no stages")
        for number, stage in enumerate(stages, start=1):
            k = stage.keep_k
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise GoldenError(f"pipeline {self.name!r} stage {number} ({stage.model}): "
                                  f"keep_k must be a positive integer, not {k!r}")
            if number > 1 and k > stages[number - 2].keep_k:
                raise GoldenError(
                    f"pipeline {self.name!r} stage {number} ({stage.model}): keep_k {k} is "
                    f"larger than its input, the {stages[number - 2].keep_k} candidates "
                    f"stage {number - 1} keeps")

    @classmethod
    def parse(cls, text: str, name: str | None = None) -> "Pipeline":
        """``"small:256,medium:64,large:10"`` -> a pipeline; the name of one of
        :data:`PIPELINES` (``"2-stage"``) -> that pipeline."""
        if text.strip() in PIPELINES:
            return PIPELINES[text.strip()]
        stages = []
        for part in text.split(","):
            model, sep, k = part.strip().partition(":")
            if not sep or not model:
                raise GoldenError(f"pipeline stage {part.strip()!r} is not MODEL:KEEP_K (or "
                                  f"name one of the pipelines: {', '.join(PIPELINES)})")
            try:
                stages.append(Stage(model, int(k)))
            except ValueError:
                raise GoldenError(f"pipeline stage {part.strip()!r}: keep_k {k!r} is not an "
                                  f"integer") from None
        return cls(name or text, tuple(stages))

    def describe(self) -> str:
        return " -> ".join(f"{s.model} keep {s.keep_k}" for s in self.stages)

    def to_dict(self) -> list[dict]:
        return [{"model": s.model, "keep_k": int(s.keep_k)} for s in self.stages]


#: The pipelines of the quality report (final keep 10 each).
PIPELINES = {p.name: p for p in (
    Pipeline("1-stage-small", (Stage("small", 10),)),
    Pipeline("1-stage-medium", (Stage("medium", 10),)),
    Pipeline("1-stage-large", (Stage("large", 10),)),
    Pipeline("2-stage", (Stage("small", 256), Stage("large", 10))),
    Pipeline("3-stage", (Stage("small", 256), Stage("medium", 64), Stage("large", 10))),
)}


def rank_float(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the best ``min(k, N)`` float scores: higher first, ties by lower id
    (the rule of :func:`rpaccel.sim.numerics.topk`)."""
    scores, ids = np.asarray(scores), np.asarray(ids)
    if scores.ndim != 1 or scores.shape != ids.shape or scores.size == 0:
        raise GoldenError(f"cannot rank scores {scores.shape} with ids {ids.shape}")
    if np.isnan(scores).any():
        raise GoldenError("a float score is NaN")
    return np.lexsort((ids, -scores))[: int(k)]


@dataclass(frozen=True)
class StageResult:
    """One stage of one query: its input ``candidates`` and their ``scores`` (input order),
    and the ``kept`` ids with their ``kept_scores``, best first."""

    model: str
    keep_k: int
    candidates: np.ndarray
    scores: np.ndarray
    kept: np.ndarray
    kept_scores: np.ndarray


@dataclass(frozen=True)
class CascadeResult:
    pipeline: Pipeline
    precision: str
    user: int
    stages: tuple

    @property
    def ranking(self) -> np.ndarray:
        """The final ranked candidate ids, best first."""
        return self.stages[-1].kept


class Golden:
    """The models of a cascade over one feature set.

    ``models`` maps names to float models, ``quantized`` the same names to their integer
    versions. Every model is checked against ``features`` here.
    """

    def __init__(self, features: Features, models: dict[str, FloatModel],
                 quantized: dict[str, QuantizedModel]):
        if set(models) != set(quantized):
            raise GoldenError(f"float models {sorted(models)} and integer models "
                              f"{sorted(quantized)} differ")
        for name in models:
            for m in (models[name], quantized[name]):
                try:
                    m.check_features(features)
                except ModelError as err:
                    raise GoldenError(f"mismatched dimensions: {err}") from None
            if models[name].spec != quantized[name].spec:
                raise GoldenError(f"model {name}: float and integer versions have different "
                                  f"layer sizes")
        self.features = features
        self.models = dict(models)
        self.quantized = dict(quantized)

    def _model_name(self, name: str) -> str:
        if name not in self.models:
            raise GoldenError(f"unknown model {name!r}; known models: "
                              f"{', '.join(self.models)}")
        return name

    def check_pipeline(self, pipeline: Pipeline) -> None:
        for stage in pipeline.stages:
            self._model_name(stage.model)

    def batch(self, user, items):
        try:
            return self.features.batch(user, items)
        except FeatureError as err:
            raise GoldenError(str(err)) from None

    def scores(self, model: str, user: int, items, precision: str = "int8") -> np.ndarray:
        """Scores of ``user``'s candidates ``items`` under one model: int32 values (int64
        array) on the ``int8`` path, float32 on the ``float32`` path."""
        name = self._model_name(model)
        batch = self.batch(user, items)
        if precision == "int8":
            return forward_int(self.quantized[name], batch)
        if precision == "float32":
            return forward_float(self.models[name], batch)
        raise GoldenError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")

    def run(self, pipeline: Pipeline, user: int, candidates, precision: str = "int8", *,
            cache: dict | None = None) -> CascadeResult:
        """Run one query through the cascade; every stage's input, scores and kept list.

        ``cache`` (optional dict) memoises the scores of (model, precision, user, candidate
        list): scoring is deterministic, so it changes nothing but time; the quality report
        shares the stage-1 scores of pipelines that start with the same model with it.
        """
        if precision not in PRECISIONS:
            raise GoldenError(f"unknown precision {precision!r}; use one of "
                              f"{', '.join(PRECISIONS)}")
        self.check_pipeline(pipeline)
        ids = self.batch(user, candidates).items
        results = []
        for number, stage in enumerate(pipeline.stages, start=1):
            if stage.keep_k > ids.size:
                raise GoldenError(f"pipeline {pipeline.name!r} stage {number} "
                                  f"({stage.model}): keep_k {stage.keep_k} is larger than its "
                                  f"{ids.size} input candidates")
            key = (stage.model, precision, int(user), ids.tobytes())
            if cache is not None and key in cache:
                scores = cache[key]
            else:
                scores = self.scores(stage.model, user, ids, precision)
                if cache is not None:
                    cache[key] = scores
            if precision == "int8":
                order = numerics.topk(scores, ids, stage.keep_k)
            else:
                order = rank_float(scores, ids, stage.keep_k)
            results.append(StageResult(stage.model, stage.keep_k, ids, scores, ids[order],
                                       scores[order]))
            ids = ids[order]
        return CascadeResult(pipeline, precision, int(user), tuple(results))


@dataclass
class GoldenSetup:
    """Dataset, split, features, the three trained models and the golden built on them."""

    split: Split
    features: Features
    golden: Golden
    model_meta: dict = field(default_factory=dict)


def load_golden(root: Path | None = None, *, force: bool = False, progress=None,
                models=MODEL_NAMES) -> GoldenSetup:
    """Fetch data, build the split and features, train or load each model and quantize it.

    ``progress`` (optional) receives one-line messages (downloads, training epochs).
    """
    ml = load_movielens(root)
    split = split_interactions(ml)
    features = build_features(ml, split)
    floats, ints, metas = {}, {}, {}
    for name in models:
        floats[name], metas[name] = train_or_load(name, features, split, force=force,
                                                  root=root, progress=progress)
        ints[name] = quantize_model(floats[name], features, split)
    return GoldenSetup(split, features, Golden(features, floats, ints), metas)
