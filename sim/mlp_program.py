"""Host side of the MLP layer engine: memory images and layer commands.

The engine (``hw/mlp_engine.py``) runs one layer per command from one on-chip activation
buffer into the other. This module turns integer layers (``docs/numerics.md``) into what the
engine's memories and command stream expect, so testbenches, benchmarks and the host
scheduler share one definition of the layouts:

* **Weight memory** (per partition): words of ``Cp`` int8 (one row of a weight tile). A layer
  of ``n_in x n_out`` occupies ``n_ot * n_it`` tiles of ``R`` words each, stored in the
  order the engine consumes them: output tile ``j`` outer, input tile ``i`` inner, tile row
  ``r`` innermost; word ``r`` of tile ``(i, j)`` holds ``w[i*R + r, j*Cp : (j+1)*Cp]``.
  Rows and columns beyond the layer are zero: padding is invisible because a zero weight
  cancels whatever the padded activation lane holds.
* **Bias memory**: words of ``Cp`` int32; word ``j`` holds ``bias[j*Cp : (j+1)*Cp]``
  (zero-padded).
* **Activation buffers**: words of ``W = max(R, Cp)`` int8 lanes. Element ``f`` of row ``b``
  lives in word ``(f // W) * sub_batch + b``, lane ``f % W``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from rpaccel.hw.geometry import EngineGeometry
from rpaccel.sim import numerics

__all__ = ["IntLayer", "LayerCommand", "gang_slice", "gang_unslice", "pack_weights",
           "pack_bias", "unpack_weights", "unpack_bias",
           "activation_addresses", "pack_activations", "unpack_activations", "MLPProgram",
           "reference_mlp", "config_widths", "random_layer", "model_mlps", "save_mlp_jobs",
           "load_mlp_jobs"]


@dataclass(frozen=True)
class IntLayer:
    """One integer layer: ``requantize(x @ w + bias, mult, shift, relu)``, or with
    ``score=True`` (one output) the int32 score ``x @ w + bias``."""

    w: np.ndarray       # (n_in, n_out) int8
    bias: np.ndarray    # (n_out,) int32
    mult: int = 0
    shift: int = 0
    relu: bool = False
    score: bool = False

    @classmethod
    def from_quant(cls, layer) -> "IntLayer":
        """The engine's view of a trained model's :class:`~rpaccel.sim.quant.QuantLayer`
        (a layer without requantization, the model's last, is a score layer)."""
        if layer.mult is None:
            return cls(w=layer.weight, bias=layer.bias, score=True)
        return cls(w=layer.weight, bias=layer.bias, mult=layer.mult, shift=layer.shift,
                   relu=layer.relu)

    @property
    def n_in(self) -> int:
        return self.w.shape[0]

    @property
    def n_out(self) -> int:
        return self.w.shape[1]


def reference_mlp(x: np.ndarray, layers: list[IntLayer], *, operand_width: int = 8,
                  acc_width: int = 32, mult_width: int = 16) -> np.ndarray:
    """The golden result of ``layers`` on rows ``x`` (``docs/numerics.md``): the last hidden
    layer's outputs, or the accumulator scores (B,) if the MLP ends in a score layer. The
    widths default to the spec's int8 / int32 / 16-bit multiplier; an engine built with
    other widths is compared with :func:`config_widths` of its configuration."""
    widths = dict(operand_width=operand_width, acc_width=acc_width)
    for layer in layers:
        if layer.score:
            return numerics.linear(x, layer.w, layer.bias, **widths)[:, 0]
        x = numerics.mlp_layer(x, layer.w, layer.bias, layer.mult, layer.shift, relu=layer.relu,
                               mult_width=mult_width, **widths)
    return x


def config_widths(config) -> dict:
    """The keyword widths of :func:`reference_mlp` for an ``AccelConfig``'s engine."""
    return dict(operand_width=config.operand_width, acc_width=config.acc_width,
                mult_width=config.requant_mult_width)


def random_layer(rng: np.random.Generator, n_in: int, n_out: int, *, relu: bool = True,
                 score: bool = False, operand_width: int = 8,
                 mult_width: int = 16) -> IntLayer:
    """Random ``operand_width``-bit weights (int8 by default) and biases with a
    ``mult_width``-bit requantization scale that maps typical accumulators (about
    ``sqrt(n_in) * 127 * 64`` for int8, growing as ``qmax**2``) onto the operand range, so
    outputs exercise rounding, ReLU and both saturation limits (test and benchmark
    stimulus)."""
    q = numerics.qmax(operand_width)       # accumulators grow as q * q, outputs as q
    mult, shift = numerics.quantize_multiplier(float(rng.uniform(0.2, 4.0)) * 127
                                               / (64 * q * n_in), mult_width=mult_width)
    bias = max(1, (1 << 12) * q // 127)
    return IntLayer(w=rng.integers(-q, q + 1, size=(n_in, n_out)),
                    bias=rng.integers(-bias, bias, size=n_out),
                    mult=mult, shift=shift, relu=relu, score=score)


def model_mlps(qm) -> dict[str, list[IntLayer]]:
    """The engine's layers of a trained model (:class:`~rpaccel.sim.quant.QuantizedModel`):
    ``{"bottom": [...], "top": [...]}``, the top MLP ending in its score layer."""
    return {"bottom": [IntLayer.from_quant(q) for q in qm.bottom],
            "top": [IntLayer.from_quant(q) for q in qm.top]}


@dataclass(frozen=True)
class LayerCommand:
    """One command of the engine's ``cmd`` stream (field names match its layout)."""

    rows: int
    in_dim: int
    out_dim: int
    weight_tile: int
    bias_word: int
    mult: int
    shift: int
    relu: bool
    score: bool
    src: int
    dst: int
    tag: int = 0
    gang_log2: int = 0       # a layer ganged over 2**gang_log2 engines (hw/compute_core.py)

    def payload(self) -> dict:
        return {"rows": self.rows, "in_dim": self.in_dim, "out_dim": self.out_dim,
                "weight_tile": self.weight_tile, "bias_word": self.bias_word,
                "mult": self.mult, "shift": self.shift, "relu": int(self.relu),
                "score": int(self.score), "src": self.src, "dst": self.dst, "tag": self.tag,
                # (a field only where the configuration forms gangs)
                **({"gang_log2": self.gang_log2} if self.gang_log2 else {})}


def gang_slice(layer: IntLayer, gang: int, index: int, geo: EngineGeometry) -> IntLayer:
    """Engine ``index``'s share of ``layer`` ganged over ``gang`` engines (the engine's
    "Ganged layers"): the layer's output tiles ``index, index + gang, ...`` of ``Cp``
    columns each, ``ceil(n_ot / gang)`` of them (columns beyond the layer are zero). A
    score layer is not split (it runs on the leader alone; every engine keeps the whole
    layer, so the gang's memories have one layout)."""
    if layer.score or gang == 1:
        return layer
    Cp = geo.cols
    n_ot = geo.out_tiles(layer.n_out)
    share = -(-n_ot // gang)
    w = np.zeros((layer.n_in, share * Cp), dtype=np.int64)
    bias = np.zeros(share * Cp, dtype=np.int64)
    for t in range(share):
        lo = (t * gang + index) * Cp
        hi = min(lo + Cp, layer.n_out)
        if lo < hi:
            w[:, t * Cp:t * Cp + hi - lo] = layer.w[:, lo:hi]
            bias[t * Cp:t * Cp + hi - lo] = layer.bias[lo:hi]
    return IntLayer(w=w, bias=bias, mult=layer.mult, shift=layer.shift, relu=layer.relu)


def gang_unslice(slices: list[IntLayer], n_out: int, geo: EngineGeometry) -> IntLayer:
    """The layer whose :func:`gang_slice` over ``len(slices)`` engines gave ``slices``
    (its first ``n_out`` columns): the inverse, for a model that reads a gang's memories."""
    first, gang, Cp = slices[0], len(slices), geo.cols
    if first.score or gang == 1:
        return first
    w = np.zeros((first.n_in, first.n_out * gang), dtype=np.int64)
    bias = np.zeros(first.n_out * gang, dtype=np.int64)
    for index, part in enumerate(slices):
        for t in range(part.n_out // Cp):
            lo = (t * gang + index) * Cp
            w[:, lo:lo + Cp] = part.w[:, t * Cp:(t + 1) * Cp]
            bias[lo:lo + Cp] = part.bias[t * Cp:(t + 1) * Cp]
    return IntLayer(w=w[:, :n_out], bias=bias[:n_out], mult=first.mult, shift=first.shift,
                    relu=first.relu)


def pack_weights(w: np.ndarray, geo: EngineGeometry) -> np.ndarray:
    """Weight-memory words (tiles * R, Cp) for ``w`` (n_in, n_out), in engine order."""
    w = np.asarray(w, dtype=np.int64)
    n_in, n_out = w.shape
    R, Cp = geo.rows, geo.cols
    n_it, n_ot = geo.in_tiles(n_in), geo.out_tiles(n_out)
    padded = np.zeros((n_it * R, n_ot * Cp), dtype=np.int64)
    padded[:n_in, :n_out] = w
    # (n_it, R, n_ot, Cp) -> (n_ot, n_it, R, Cp): output tile outer, input tile inner.
    tiles = padded.reshape(n_it, R, n_ot, Cp).transpose(2, 0, 1, 3)
    return tiles.reshape(n_ot * n_it * R, Cp)


def unpack_weights(words: np.ndarray, n_in: int, n_out: int, geo: EngineGeometry) -> np.ndarray:
    """The ``(n_in, n_out)`` matrix stored in weight-memory ``words`` (``tiles * R`` rows of
    ``Cp``) by :func:`pack_weights`: its exact inverse (padding dropped)."""
    R, Cp = geo.rows, geo.cols
    n_it, n_ot = geo.in_tiles(n_in), geo.out_tiles(n_out)
    tiles = np.asarray(words, dtype=np.int64).reshape(n_ot, n_it, R, Cp)
    return tiles.transpose(1, 2, 0, 3).reshape(n_it * R, n_ot * Cp)[:n_in, :n_out]


def unpack_bias(words: np.ndarray, n_out: int) -> np.ndarray:
    """The ``n_out`` biases stored in bias-memory ``words`` by :func:`pack_bias`."""
    return np.asarray(words, dtype=np.int64).reshape(-1)[:n_out]


def pack_bias(bias: np.ndarray, geo: EngineGeometry) -> np.ndarray:
    """Bias-memory words (n_ot, Cp)."""
    bias = np.asarray(bias, dtype=np.int64)
    n_ot = geo.out_tiles(bias.shape[0])
    padded = np.zeros(n_ot * geo.cols, dtype=np.int64)
    padded[: bias.shape[0]] = bias
    return padded.reshape(n_ot, geo.cols)


def activation_addresses(B: int, d: int, geo: EngineGeometry) -> list[int]:
    """Buffer words holding rows ``0..B-1``, elements ``0..d-1``, chunk by chunk (the order
    :func:`pack_activations` writes and :func:`unpack_activations` reads them in)."""
    return [c * geo.sub_batch + b for c in range(math.ceil(d / geo.act_lanes)) for b in range(B)]


def pack_activations(x: np.ndarray, geo: EngineGeometry) -> list[tuple[int, np.ndarray]]:
    """(address, W-lane word) writes that place ``x`` (B, d) into an activation buffer."""
    x = np.asarray(x, dtype=np.int64)
    B, d = x.shape
    if B > geo.sub_batch or d > geo.max_layer_dim:
        raise ValueError(f"activations {x.shape} exceed sub_batch={geo.sub_batch} x "
                         f"max_layer_dim={geo.max_layer_dim}")
    W = geo.act_lanes
    chunks = math.ceil(d / W)
    padded = np.zeros((B, chunks * W), dtype=np.int64)
    padded[:, :d] = x
    words = padded.reshape(B, chunks, W).transpose(1, 0, 2).reshape(chunks * B, W)
    return list(zip(activation_addresses(B, d, geo), words))


def unpack_activations(words, B: int, d: int, geo: EngineGeometry) -> np.ndarray:
    """(B, d) activations from the W-lane ``words`` read at :func:`activation_addresses`."""
    W = geo.act_lanes
    chunks = math.ceil(d / W)
    lanes = np.asarray(words, dtype=np.int64).reshape(chunks, B, W)
    return lanes.transpose(1, 0, 2).reshape(B, chunks * W)[:, :d]


@dataclass
class MLPProgram:
    """Memory images and commands running a whole MLP on one partition's engine.

    Layers run one after another, alternating between the two activation buffers; the input
    goes into buffer ``src`` and the output of layer ``l`` lands in buffer ``(src + l + 1) % 2``
    (a score layer streams its results out instead).
    """

    geo: EngineGeometry
    layers: list[IntLayer]
    weight_base: int = 0     # first weight tile
    bias_base: int = 0       # first bias word
    weight_words: np.ndarray = field(init=False)
    bias_words: np.ndarray = field(init=False)
    tile_offsets: list[int] = field(init=False)
    bias_offsets: list[int] = field(init=False)

    def __post_init__(self):
        g = self.geo
        words, biases, self.tile_offsets, self.bias_offsets = [], [], [], []
        tile, bword = self.weight_base, self.bias_base
        for layer in self.layers:
            self.tile_offsets.append(tile)
            self.bias_offsets.append(bword)
            words.append(pack_weights(layer.w, g))
            biases.append(pack_bias(layer.bias, g))
            tile += g.weight_tiles(layer.n_in, layer.n_out)
            bword += g.out_tiles(layer.n_out)
        if tile * g.rows > g.weight_words:
            raise ValueError(f"the MLP needs {tile} weight tiles; the engine holds "
                             f"{g.weight_words // g.rows}")
        if bword > g.bias_words:
            raise ValueError(f"the MLP needs {bword} bias words; the engine holds {g.bias_words}")
        self.weight_words = np.concatenate(words)
        self.bias_words = np.concatenate(biases)

    def weight_writes(self):
        """(address, Cp lanes) writes for the weight memory."""
        base = self.weight_base * self.geo.rows
        return [(base + a, row) for a, row in enumerate(self.weight_words)]

    def bias_writes(self):
        return [(self.bias_base + a, row) for a, row in enumerate(self.bias_words)]

    def commands(self, rows: int, *, src: int = 0, tag_base: int = 0,
                 gang_log2: int = 0) -> list[LayerCommand]:
        """The layer commands on ``rows`` rows; with ``gang_log2`` (this program holds a
        gang member's :func:`gang_slice` layers) every layer but a score layer is ganged."""
        cmds = []
        buf = src
        for n, layer in enumerate(self.layers):
            cmds.append(LayerCommand(
                rows=rows, in_dim=layer.n_in, out_dim=layer.n_out,
                weight_tile=self.tile_offsets[n], bias_word=self.bias_offsets[n],
                mult=layer.mult, shift=layer.shift, relu=layer.relu, score=layer.score,
                src=buf, dst=1 - buf, tag=(tag_base + n) & 0xFF,
                gang_log2=0 if layer.score else gang_log2))
            buf = 1 - buf
        return cmds


def save_mlp_jobs(path, models: dict[str, list[IntLayer]], jobs: list[tuple]) -> None:
    """Write MLP jobs for ``tb/mlp_jobs.py`` (read back by :func:`load_mlp_jobs`): ``models``
    by name, ``jobs`` as ``(model name, x)`` or ``(model name, x, expected)`` tuples."""
    arrays = {}
    for name, layers in models.items():
        arrays[f"m_{name}_layers"] = np.array(len(layers))
        for i, layer in enumerate(layers):
            arrays[f"m_{name}_l{i}_w"] = np.asarray(layer.w, dtype=np.int64)
            arrays[f"m_{name}_l{i}_bias"] = np.asarray(layer.bias, dtype=np.int64)
            arrays[f"m_{name}_l{i}_params"] = np.array(
                [layer.mult, layer.shift, int(layer.relu), int(layer.score)])
    for n, job in enumerate(jobs):
        model, x, *expected = job
        if model not in models:
            raise ValueError(f"job {n} names unknown model {model!r}")
        arrays[f"j{n}_model"] = np.array(model)
        arrays[f"j{n}_x"] = np.asarray(x, dtype=np.int64)
        if expected:
            arrays[f"j{n}_expected"] = np.asarray(expected[0], dtype=np.int64)
    np.savez(path, **arrays)


def load_mlp_jobs(path) -> tuple[dict[str, list[IntLayer]], list[tuple]]:
    """The ``(models, jobs)`` written by :func:`save_mlp_jobs` (``expected`` is ``None``
    where the job has none)."""
    arrays = np.load(path, allow_pickle=False)
    models = {}
    for key in arrays.files:
        if key.startswith("m_") and key.endswith("_layers"):
            name = key[2:-len("_layers")]
            layers = []
            for i in range(int(arrays[key])):
                mult, shift, relu, score = (int(v) for v in arrays[f"m_{name}_l{i}_params"])
                layers.append(IntLayer(w=arrays[f"m_{name}_l{i}_w"],
                                       bias=arrays[f"m_{name}_l{i}_bias"], mult=mult,
                                       shift=shift, relu=bool(relu), score=bool(score)))
            models[name] = layers
    jobs = []
    while f"j{len(jobs)}_x" in arrays.files:
        n = len(jobs)
        jobs.append((str(arrays[f"j{n}_model"]), arrays[f"j{n}_x"],
                     arrays[f"j{n}_expected"] if f"j{n}_expected" in arrays.files else None))
    return models, jobs
