"""Model of the feature-interaction unit (``rpaccel.hw.interaction``): pair parameters,
samples, the beats the unit must answer (``rpaccel.sim.numerics.interaction``), and a
scoreboard.

Shared by the Amaranth-simulator tests (``tests/test_interaction.py``) and the cocotb bench
(``tb/test_interaction.py``). Pure Python: numpy, the unit's layouts, the golden numerics.
"""

from __future__ import annotations

import numpy as np

from rpaccel.hw.config import AccelConfig
from rpaccel.hw.interaction import pack_max, pair_groups, pairs_max
from rpaccel.sim import numerics

__all__ = ["error_beat", "Sample", "random_params", "random_sample", "dims_for",
           "mixed_samples", "param_writes", "expected", "expected_beats", "check"]


def error_beat(config: AccelConfig) -> dict:
    """The one beat that stands for a rejected sample."""
    return {"data": [0] * pack_max(config), "count": 0, "last": 1, "error": 1}


class Sample:
    """One sample: ``n`` vectors of ``emb_dim_max`` elements (garbage beyond ``dim``) and
    its dimension."""

    def __init__(self, vectors: np.ndarray, dim: int):
        self.vectors = np.asarray(vectors, dtype=np.int64)
        self.dim = dim

    @property
    def n(self) -> int:
        return len(self.vectors)

    def beats(self) -> list[dict]:
        """The ``vectors`` payloads, ``last`` on the final one."""
        return [{"data": [int(x) for x in v], "last": int(k == self.n - 1)}
                for k, v in enumerate(self.vectors)]


def random_params(config: AccelConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair (mult, shift): mostly scaled so that results spread over int8; every third
    pair rescales a little (small dot products then round at exact halves); plus the
    extremes (mult 0, 1, 3 and max; shift 0, 1, 2, 31, 47, 63)."""
    count, mw = pairs_max(config), config.requant_mult_width
    top = (1 << mw) - 1
    mults = rng.integers(1 << (mw - 1), 1 << mw, count)
    shifts = np.clip(rng.integers(14, 20, count) + mw - 7, 0, 63)
    small = len(mults[::3])
    mults[::3], shifts[::3] = rng.integers(1, 8, small), rng.integers(1, 5, small)
    extremes = [(0, 3), (0, 5), (top, 63), (1, 0), (1, 1), (top, 31), (top, 47), (3, 2),
                (top, 0)]
    for k, (mult, shift) in enumerate(extremes):
        mults[(5 * k + 2) % count], shifts[(5 * k + 2) % count] = mult, shift
    return mults.astype(np.int64), shifts.astype(np.int64)


def random_sample(config: AccelConfig, rng: np.random.Generator, n: int, dim: int, *,
                  small: bool = False) -> Sample:
    """Random int8 vectors, the elements beyond ``dim`` garbage (the unit ignores them).
    Some are the extremes (-128/127: the largest products of both signs); ``small`` ones
    (-2..2) give dot products small enough that the pairs with small shifts hit exact
    halves and zeros."""
    emb = config.emb_dim_max
    vectors = rng.integers(-128, 128, (n, emb))
    kind = rng.random()
    if small or kind < 0.15:
        vectors = rng.integers(-2, 3, (n, emb))
    elif kind < 0.3:
        vectors = rng.choice([-128, 127], (n, emb))
    return Sample(vectors, dim)


def dims_for(config: AccelConfig) -> list[int]:
    """D = 1, 4, 16, lanes, not a multiple of lanes, emb_dim_max - 1 and emb_dim_max."""
    lanes, emb = config.interaction_lanes, config.emb_dim_max
    return sorted({1, lanes, lanes + 3 if lanes + 3 <= emb else lanes - 1, emb, 4, 16, emb - 1})


def mixed_samples(config: AccelConfig, rng: np.random.Generator) -> list[Sample]:
    """n = 2, 9 and max for every D of :func:`dims_for`, plus random n and D."""
    vmax = config.max_interaction_vectors
    samples = [random_sample(config, rng, n, dim) for dim in dims_for(config)
               for n in (2, 9, vmax)]
    samples += [random_sample(config, rng, int(rng.integers(2, vmax + 1)),
                              int(rng.integers(1, config.emb_dim_max + 1))) for _ in range(4)]
    samples.append(random_sample(config, rng, vmax, min(config.emb_dim_max,
                                                         config.interaction_lanes + 1),
                                 small=True))
    return samples


def param_writes(mults, shifts) -> list[dict]:
    """The ``pair_params`` payloads that load (mults, shifts)."""
    return [{"index": k, "mult": int(m), "shift": int(s)}
            for k, (m, s) in enumerate(zip(mults, shifts))]


def expected(config: AccelConfig, sample: Sample, mults, shifts) -> list[dict]:
    """The golden output beats of one sample (one error beat for a bad sample): the results
    in ``interaction_pairs`` order, in the groups of ``hw.interaction.pair_groups`` (one
    beat each, unused elements 0)."""
    n, dim = sample.n, sample.dim
    if not (2 <= n <= config.max_interaction_vectors and 1 <= dim <= config.emb_dim_max):
        return [error_beat(config)]
    pairs = n * (n - 1) // 2
    values = numerics.interaction(sample.vectors[None, :, :dim], mults[:pairs], shifts[:pairs],
                                  width=config.operand_width, acc_width=config.acc_width,
                                  mult_width=config.requant_mult_width)[0]
    width, groups = pack_max(config), pair_groups(config, n, dim)
    beats, at = [], 0
    for g, size in enumerate(groups):
        chunk = [int(v) for v in values[at:at + size]]
        at += size
        beats.append({"data": chunk + [0] * (width - size), "count": size,
                      "last": int(g == len(groups) - 1), "error": 0})
    return beats


def expected_beats(config: AccelConfig, samples, mults, shifts) -> list[dict]:
    """Every output beat of ``samples``, in order."""
    return [b for s in samples for b in expected(config, s, mults, shifts)]


def check(config: AccelConfig, samples, got: list[dict], mults, shifts) -> None:
    """Scoreboard: ``got`` (every output beat, in order) against the golden, naming the
    first wrong sample and beat."""
    at = 0
    for index, sample in enumerate(samples):
        want = expected(config, sample, mults, shifts)
        beats = got[at:at + len(want)]
        at += len(want)
        assert beats == want, (f"sample {index} (n={sample.n}, dim={sample.dim}): got "
                               f"{[b['data'] for b in beats]}, expected "
                               f"{[b['data'] for b in want]}")
    assert at == len(got), f"{len(got) - at} extra output beats"
