"""Model of the MLP layer engine and the compute core (hw/mlp_engine.py, hw/compute_core.py).

A :class:`Job` is a whole MLP (integer layers, ``rpaccel.sim.mlp_program.IntLayer``) and its
input rows for one partition. The engine must answer every layer command with
``error = 0`` and its tag, stream a score layer's int32 scores in row order with ``last``
on the final one, and leave the golden's result (``reference_mlp``, docs/numerics.md) in
the activation buffer or on the score stream. Bad commands (:func:`bad_commands`) must be
answered with ``error = 1`` and change nothing.

The memory images and commands themselves come from the host layer
(``rpaccel.sim.mlp_program``); this module holds the stimulus (random MLPs and
activations over the configuration's operand range), the expected results and the
scoreboard, used by ``tests/test_mlp_engine.py`` (Amaranth simulator) and
``tb/test_compute_core.py`` (cocotb).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth import Shape

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.hw.mlp_engine import command_layout
from rpaccel.sim.mlp_program import (IntLayer, LayerCommand, config_widths, random_layer,
                                     reference_mlp)
from rpaccel.sim.numerics import qmax, qmin

__all__ = ["Job", "random_activations", "random_mlp", "random_config_layer", "good_command",
           "good_job", "bad_commands", "check_outputs", "check_job", "fits"]


@dataclass
class Job:
    """A whole MLP to run on one partition of ``config``: ``layers`` on the rows ``x``
    (B x n_in); the golden result uses the configuration's operand and accumulator widths."""
    config: AccelConfig
    layers: list[IntLayer]
    x: np.ndarray

    @property
    def rows(self) -> int:
        return self.x.shape[0]

    @property
    def expected(self) -> np.ndarray:
        """The golden result: the int32 scores (B,) of a score MLP, else the last layer's
        outputs (B, n_out)."""
        return reference_mlp(self.x, self.layers, **config_widths(self.config))


def random_activations(config: AccelConfig, rng: np.random.Generator, rows: int,
                       dim: int) -> np.ndarray:
    """``rows x dim`` input activations over the whole signed ``operand_width`` range."""
    width = config.operand_width
    return rng.integers(qmin(width), qmax(width), size=(rows, dim), endpoint=True)


def random_mlp(config: AccelConfig, rng: np.random.Generator, *, score: bool) -> list[IntLayer]:
    """1 to 3 random layers of random widths up to half ``max_layer_dim`` (not multiples of
    R or Cp in general), fewer and narrower where the configuration's weight and bias
    memories are small; with ``score`` the last is a one-output score layer."""
    depth = int(rng.integers(1, 4))
    dims = [int(rng.integers(1, config.max_layer_dim // 2 + 1)) for _ in range(depth + 1)]
    if score:
        dims[-1] = 1
    while not fits(config, dims):   # small weight or bias memories: fewer, then narrower layers
        if len(dims) > 2:
            dims.pop(-2)
        else:
            i = int(np.argmax(dims))
            if dims[i] == 1:
                raise ValueError(f"configuration {config.hash}: no layer fits the engine")
            dims[i] //= 2
    depth = len(dims) - 1
    return [random_config_layer(config, rng, dims[n], dims[n + 1], relu=bool(rng.integers(2)),
                                score=score and n == depth - 1) for n in range(depth)]


def fits(config: AccelConfig, dims: list[int]) -> bool:
    """Whether an MLP of layer widths ``dims`` (inputs first) fits one engine's weight and
    bias memories."""
    geo = EngineGeometry.of(config)
    pairs = list(zip(dims, dims[1:]))
    return (sum(geo.weight_tiles(a, b) for a, b in pairs) * geo.rows <= geo.weight_words
            and sum(geo.out_tiles(b) for _, b in pairs) <= geo.bias_words)


def good_job(config: AccelConfig, rng: np.random.Generator) -> Job:
    """A one-layer job of 2 rows, 5 inputs and 3 outputs (fewer of each where
    ``sub_batch``, ``max_layer_dim`` or the engine's weight and bias memories are smaller):
    the good command after a bad one."""
    n_in = min(5, config.max_layer_dim)
    n_out = next(d for d in (3, 2, 1) if d <= config.max_layer_dim and fits(config, [n_in, d]))
    return Job(config, [random_config_layer(config, rng, n_in, n_out)],
               random_activations(config, rng, min(2, config.sub_batch), n_in))


def random_config_layer(config: AccelConfig, rng: np.random.Generator, n_in: int, n_out: int,
                        **kwargs) -> IntLayer:
    """:func:`random_layer` at ``config``'s operand and requantization-multiplier widths."""
    return random_layer(rng, n_in, n_out, operand_width=config.operand_width,
                        mult_width=config.requant_mult_width, **kwargs)


def good_command(**changes) -> LayerCommand:
    """A valid command (2 rows of a 5 -> 3 layer from buffer 0 to 1), with ``changes``."""
    fields = dict(rows=2, in_dim=5, out_dim=3, weight_tile=0, bias_word=0, mult=1, shift=0,
                  relu=False, score=False, src=0, dst=1, tag=0)
    return LayerCommand(**{**fields, **changes})


def bad_commands(config: AccelConfig) -> list[dict]:
    """Changes that make :func:`good_command` invalid, one rule each: no rows, no inputs, no
    outputs, more rows than the sub-batch, inputs beyond ``max_layer_dim``, source and
    destination the same buffer (both), a score layer with more than one output, and
    weight tiles beyond the weight memory. A rule the command's fields cannot express is
    left out: ``rows = sub_batch + 1`` when it does not fit the ``rows`` field (``sub_batch``
    one below a power of two), and the weight rule when every layer is one tile (``R`` and
    ``Cp`` at least ``max_layer_dim``) and the ``weight_tile`` field cannot name the first
    tile beyond the memory."""
    layout = command_layout(config)
    geo = EngineGeometry.of(config)

    def width(field):
        return Shape.cast(layout[field].shape).width

    bad = [dict(rows=0), dict(in_dim=0), dict(out_dim=0)]
    if config.sub_batch + 1 < 1 << width("rows"):
        bad.append(dict(rows=config.sub_batch + 1))
    bad += [dict(in_dim=config.max_layer_dim + 1), dict(src=0, dst=0), dict(src=1, dst=1),
            dict(score=True, out_dim=2)]
    # a layer of at least two tiles starting at the last tile runs beyond the memory
    n_in, n_out = min(config.max_layer_dim, geo.rows + 1), min(config.max_layer_dim, geo.cols + 1)
    tiles = geo.weight_words // geo.rows
    if geo.weight_tiles(n_in, n_out) >= 2:
        bad.append(dict(weight_tile=tiles - 1, in_dim=n_in, out_dim=n_out))
    elif tiles < 1 << width("weight_tile"):
        bad.append(dict(weight_tile=tiles, in_dim=n_in, out_dim=n_out))
    return bad


def check_outputs(partition: int, got: np.ndarray, expected: np.ndarray) -> None:
    """Scoreboard of a result: ``got`` equals ``expected`` element for element; the message
    counts the mismatches and shows the first."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, \
        f"partition {partition}: result shape {got.shape}, expected {expected.shape}"
    bad = np.argwhere(np.atleast_1d(got != expected))
    assert bad.size == 0, (f"partition {partition}: {bad.shape[0]} mismatches, first at "
                           f"{bad[0].tolist()}: got {np.atleast_1d(got)[tuple(bad[0])]}, "
                           f"expected {np.atleast_1d(expected)[tuple(bad[0])]}")


def check_job(partition: int, job: Job, responses: list[dict], scores: list[dict] | None,
              out: np.ndarray | None) -> None:
    """Scoreboard of a whole job: every response ``error = 0``; for a score MLP the score
    payloads (``scores``) numbered 0..B-1 with ``last`` on the final one and equal to the
    golden, else the activations read back (``out``) equal to it."""
    assert all(r["error"] == 0 for r in responses), \
        f"partition {partition}: a command was rejected: {responses}"
    if job.layers[-1].score:
        assert scores is not None, f"partition {partition}: no scores"
        assert [s["row"] for s in scores] == list(range(job.rows))
        assert [s["last"] for s in scores] == [0] * (job.rows - 1) + [1]
        check_outputs(partition, [s["score"] for s in scores], job.expected)
    else:
        check_outputs(partition, out, job.expected)
