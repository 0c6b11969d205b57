"""Integer models: calibration of a float model into a :class:`QuantizedModel`, and the
integer forward pass (:func:`forward_int`), the bit-exact reference of the RTL.

The integer forward pass uses only :mod:`rpaccel.sim.numerics` (``quantize_tensor``,
``mlp_layer``, ``linear``, ``pool_sum``, ``interaction``) on the arrays of a
:class:`QuantizedModel`, exactly as ``docs/numerics.md`` specifies:

1. dense features -> int8 with the model's ``dense_scale``;
2. bottom MLP: ``mlp_layer`` with ReLU on every layer (one ``(mult, shift)`` per layer);
3. embeddings: int8 rows of each single-valued table; the genre bag is ``pool_sum`` of its
   rows (saturated once);
4. ``interaction`` of ``[bottom output, 8 pooled embeddings]`` with one ``(mult, shift)``
   per pair;
5. top MLP on ``concat(bottom output, pair outputs)``: hidden layers ``mlp_layer`` with
   ReLU; the last layer is ``linear`` only and its int32 accumulator is the score.

Calibration (:func:`quantize_model`) runs the float model over calibration samples drawn
from the training split and picks every scale (see ``docs/golden.md``): per-tensor
symmetric weight scales ``max|W| / 127``, one scale per embedding table (``max|row|``; for
the genre table also the largest pooled bag, so real bags do not saturate), activation
scales from a high percentile of ``|activation|`` and the per-input scales of the first top
layer folded into its weights. Scales never reach the hardware; only the integer arrays,
multipliers and shifts do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rpaccel.hw.errors import RpaccelError

from . import numerics
from .features import TABLES, CandidateBatch, Features, Split, check_batch, lookup_rows
from .models import FloatModel, ModelSpec, check_dims, forward_float

__all__ = ["QuantLayer", "QuantizedModel", "IntTrace", "CalibrationConfig", "QuantizationError",
           "quantize_model", "forward_int", "embedding_vectors", "calibration_batch"]

I8 = numerics.qmax(8)  # 127


class QuantizationError(RpaccelError, ValueError):
    """A model that cannot be represented in the integer numerics (e.g. a bias outside
    int32), or a calibration configuration that makes no sense."""


@dataclass(frozen=True)
class QuantLayer:
    """One integer MLP layer: int8 ``weight`` (in, out), int32 ``bias`` (out,), the
    requantization ``mult``/``shift`` (``None`` for the final layer, whose accumulator is
    the score) and the real value of one output unit (``out_scale``, software only)."""

    weight: np.ndarray
    bias: np.ndarray
    mult: int | None
    shift: int | None
    relu: bool
    out_scale: float


@dataclass(frozen=True)
class QuantizedModel:
    """Everything the hardware needs to run one model, plus the scales calibration chose.

    ``tables[t]`` int8 rows of table ``t`` (:data:`~rpaccel.sim.features.TABLES` order) with
    scale ``table_scales[t]``; ``bottom`` and ``top`` the layers; ``inter_mults`` and
    ``inter_shifts`` one requantization per interaction pair (pair order of
    :func:`~rpaccel.sim.numerics.interaction_pairs`); ``dense_scale`` the scale the host
    quantizes the dense features with.
    """

    spec: ModelSpec
    dense_scale: float
    tables: tuple
    table_scales: tuple
    bottom: tuple
    inter_mults: np.ndarray
    inter_shifts: np.ndarray
    inter_scales: np.ndarray
    top: tuple
    calibration: dict = field(default_factory=dict)
    _bag_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        for table in self.tables:
            table.flags.writeable = False

    @property
    def score_scale(self) -> float:
        """Real value of one unit of the integer score (the float logit ~ score * this)."""
        return self.top[-1].out_scale

    def check_features(self, features: Features) -> None:
        check_dims(self.spec, [t.shape[0] for t in self.tables], features)


@dataclass
class IntTrace:
    """The intermediates of one integer forward pass (all int64 arrays of integer values):
    ``dense`` (B, 4) int8 inputs, ``bottom`` each bottom layer's output, ``embeddings``
    (B, tables, D) pooled rows, ``interaction`` (B, pairs), ``top_input`` (B, D + pairs),
    ``top`` each hidden top layer's output, ``scores`` (B,) int32."""

    dense: np.ndarray
    bottom: list
    embeddings: np.ndarray
    interaction: np.ndarray
    top_input: np.ndarray
    top: list
    scores: np.ndarray


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibration samples: ``users`` training users drawn with ``seed``; for each, every
    training item plus ``random_items`` items drawn uniformly (the candidates a query
    scores are mostly items the user never saw). Activation ranges use the
    ``percentile``-th percentile of ``|activation|`` (100 = the maximum)."""

    users: int = 128
    random_items: int = 256
    percentile: float = 99.99
    seed: int = 11

    def to_dict(self) -> dict:
        return {"users": self.users, "random_items": self.random_items,
                "percentile": self.percentile, "seed": self.seed}


# -- integer forward pass --------------------------------------------------------------------
def embedding_vectors(qm: QuantizedModel, batch: CandidateBatch) -> np.ndarray:
    """(B, tables, D) int8 embedding vectors: single-valued rows, then pooled bags.

    The last table is the genre bag: each distinct bag of the batch is pooled once with
    :func:`~rpaccel.sim.numerics.pool_sum` (the same bag always pools to the same vector).
    """
    n_single = len(qm.tables) - 1
    check_batch(batch, n_single, qm.tables[-1].shape[0], qm.spec.n_dense)
    vecs = [lookup_rows(qm.tables[t], batch.sparse[:, t], TABLES[t]) for t in range(n_single)]
    bags, which = _distinct_bags(batch.genres)
    pooled = np.stack([_pool_bag(qm, bag) for bag in bags])
    vecs.append(pooled[which])
    return np.stack(vecs, axis=1).astype(np.int64)


def _distinct_bags(multi_hot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a boolean multi-hot matrix and each row's index among them."""
    multi_hot = np.asarray(multi_hot, dtype=bool)
    if multi_hot.shape[1] <= 62:  # one integer code per bag: a fast 1-D unique
        codes = multi_hot.astype(np.int64) @ (np.int64(1) << np.arange(multi_hot.shape[1]))
        _, first, which = np.unique(codes, return_index=True, return_inverse=True)
        return multi_hot[first], which.ravel()
    bags, which = np.unique(multi_hot, axis=0, return_inverse=True)
    return bags, which.ravel()


def _pool_bag(qm: "QuantizedModel", bag: np.ndarray) -> np.ndarray:
    """``pool_sum`` of the genre rows of one bag, memoised per model (its tables are
    read-only, so a bag always pools to the same vector)."""
    rows = tuple(np.flatnonzero(bag).tolist())
    pooled = qm._bag_cache.get(rows)
    if pooled is None:
        pooled = numerics.pool_sum(qm.tables[-1][list(rows)])
        qm._bag_cache[rows] = pooled
    return pooled


def forward_int(qm: QuantizedModel, batch: CandidateBatch, *, trace: bool = False):
    """Integer scores (B,) (int32 values in int64) of a batch; with ``trace=True`` an
    :class:`IntTrace` of every intermediate instead."""
    dense = numerics.quantize_tensor(batch.dense, qm.dense_scale)
    h = dense
    bottom = []
    for layer in qm.bottom:
        h = numerics.mlp_layer(h, layer.weight, layer.bias, layer.mult, layer.shift, relu=True)
        bottom.append(h)
    emb = embedding_vectors(qm, batch)
    inter = numerics.interaction(np.concatenate([h[:, None, :], emb], axis=1),
                                 qm.inter_mults, qm.inter_shifts)
    t = top_input = np.concatenate([h, inter], axis=1)
    top = []
    for layer in qm.top[:-1]:
        t = numerics.mlp_layer(t, layer.weight, layer.bias, layer.mult, layer.shift, relu=True)
        top.append(t)
    last = qm.top[-1]
    scores = numerics.linear(t, last.weight, last.bias)[:, 0]
    if not trace:
        return scores
    return IntTrace(dense=dense, bottom=bottom, embeddings=emb, interaction=inter,
                    top_input=top_input, top=top, scores=scores)


# -- calibration ---------------------------------------------------------------------------------
def calibration_batch(features: Features, split: Split, cfg: CalibrationConfig) -> CandidateBatch:
    """The calibration samples of ``cfg`` (see :class:`CalibrationConfig`)."""
    rng = np.random.default_rng(cfg.seed)
    users = np.sort(rng.choice(split.n_users, size=min(cfg.users, split.n_users), replace=False))
    pair_u, pair_i = [], []
    for user in users:
        own = np.flatnonzero(split.train[user])
        rand = rng.integers(0, split.n_items, size=cfg.random_items)
        items = np.concatenate([own, rand])
        pair_u.append(np.full(items.size, user))
        pair_i.append(items)
    return features.pair_batch(np.concatenate(pair_u), np.concatenate(pair_i))


def _range(values: np.ndarray, percentile: float) -> float:
    """The calibrated range of a tensor: the ``percentile``-th percentile of ``|x|``.

    (Clipping harder, e.g. at the MSE-optimal clip value, was tried and ranks much worse:
    the clipped tail holds the popular items that rank first.)"""
    a = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    if a.size == 0:
        return 0.0
    return float(a.max() if percentile >= 100 else np.percentile(a, percentile))


def _scale(amax: float, fallback: float) -> float:
    """The scale mapping ``amax`` to 127; ``fallback`` when the tensor is all zeros."""
    return amax / I8 if amax > 0 else fallback


def _bias(b: np.ndarray, scale: float, what: str) -> np.ndarray:
    q = np.rint(np.asarray(b, dtype=np.float64) / scale)
    lim = numerics.qmax(32)
    if np.abs(q).max(initial=0) > lim:
        raise QuantizationError(f"{what}: a bias of {float(np.abs(b).max()):.4g} needs "
                                f"{float(np.abs(q).max()):.4g} units, outside int32")
    return q.astype(np.int64)


def _layer(w, b, in_scale: float, out_scale: float | None, *, relu: bool, what: str,
           row_scales: np.ndarray | None = None) -> QuantLayer:
    """Quantize one layer. ``row_scales`` folds a per-input scale into the weight rows (the
    integer inputs are then used as they are, so the effective input scale is 1)."""
    w = np.asarray(w, dtype=np.float64)
    if row_scales is not None:
        w = w * np.asarray(row_scales, dtype=np.float64)[:, None]
        in_scale = 1.0
    w_scale = _scale(float(np.abs(w).max()), 1.0)
    acc_scale = in_scale * w_scale
    wq = numerics.quantize_tensor(w, w_scale)
    bq = _bias(b, acc_scale, what)
    if out_scale is None:
        return QuantLayer(wq, bq, None, None, relu, acc_scale)
    mult, shift = numerics.quantize_multiplier(acc_scale / out_scale)
    return QuantLayer(wq, bq, mult, shift, relu, out_scale)


def quantize_model(model: FloatModel, features: Features, split: Split,
                   cfg: CalibrationConfig | None = None) -> QuantizedModel:
    """Calibrate ``model`` on training data and quantize it (deterministic for ``cfg``)."""
    cfg = cfg or CalibrationConfig()
    if not 50.0 <= cfg.percentile <= 100.0:
        raise QuantizationError(f"calibration percentile must be in [50, 100], "
                                f"not {cfg.percentile}")
    model.check_features(features)
    spec = model.spec
    batch = calibration_batch(features, split, cfg)
    _, tape = forward_float(model, batch, tape=True)
    pct = cfg.percentile

    dense_scale = _scale(_range(batch.dense, 100.0), 1.0 / I8)

    # Embedding tables: one scale each; the genre bag's scale also covers every item's bag.
    table_scales = [_scale(float(np.abs(t).max()), 1.0) for t in model.tables[:-1]]
    genre = model.tables[-1]
    pooled_items = features.item_genres.astype(np.float64) @ genre.astype(np.float64)
    table_scales.append(_scale(max(float(np.abs(genre).max()),
                                   float(np.abs(pooled_items).max())), 1.0))
    tables = tuple(numerics.quantize_tensor(t, s) for t, s in zip(model.tables, table_scales))

    # Bottom MLP: ReLU everywhere; each output scale from its calibrated range.
    bottom, in_scale = [], dense_scale
    for i, (w, b) in enumerate(model.bottom):
        out_scale = _scale(_range(tape["bottom"][i], pct), in_scale)
        bottom.append(_layer(w, b, in_scale, out_scale, relu=True, what=f"bottom layer {i}"))
        in_scale = out_scale
    bottom_scale = in_scale

    # Interaction: pair (i, j) has accumulator scale s_i * s_j and its own output scale.
    vec_scales = np.array([bottom_scale, *table_scales])
    pairs = numerics.interaction_pairs(spec.n_vectors)
    acc_scales = np.array([vec_scales[i] * vec_scales[j] for i, j in pairs])
    dots = tape["dots"]
    inter_scales = np.array([_scale(_range(dots[:, p], pct), acc_scales[p])
                             for p in range(len(pairs))])
    mults, shifts = zip(*(numerics.quantize_multiplier(a / s)
                          for a, s in zip(acc_scales, inter_scales)))

    # Top MLP: the first layer's inputs come with per-group scales, folded into its rows.
    row_scales = np.concatenate([np.full(spec.emb_dim, bottom_scale), inter_scales])
    top, last = [], len(model.top) - 1
    in_scale = 1.0
    for i, (w, b) in enumerate(model.top):
        out_scale = None if i == last else _scale(_range(tape["top"][i], pct), 1.0)
        layer = _layer(w, b, in_scale, out_scale, relu=i < last, what=f"top layer {i}",
                       row_scales=row_scales if i == 0 else None)
        top.append(layer)
        in_scale = layer.out_scale

    return QuantizedModel(
        spec=spec, dense_scale=dense_scale, tables=tables, table_scales=tuple(table_scales),
        bottom=tuple(bottom), inter_mults=np.array(mults, dtype=np.int64),
        inter_shifts=np.array(shifts, dtype=np.int64), inter_scales=inter_scales,
        top=tuple(top), calibration={**cfg.to_dict(), "samples": len(batch)})
