"""The host layer (sim/host.py): allocation, sub-batches, partition mapping and the cascade
on interchangeable backends (the golden model and the RTL through cocotb)."""

import numpy as np
import pytest

from rpaccel.gen.transport import CocotbTransport
from rpaccel.hw.config import PRESETS
from rpaccel.hw.geometry import EngineGeometry
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.golden import Pipeline, load_golden
from rpaccel.sim.host import (CascadeMismatch, GoldenTransport, HostError, JobResult,
                              allocate_models, deal, run_cascade, split_columns, sub_batches)
from rpaccel.sim.mlp_program import model_mlps, random_layer
from rpaccel.tb.amaranth_transport import AmaranthTransport

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def setup():
    ensure_dataset()
    return load_golden()


def test_sub_batches_deal_and_column_split_literals():
    assert sub_batches(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert sub_batches(4, 4) == [(0, 4)]
    assert deal(5, 2) == [[0, 2, 4], [1, 3]]
    assert deal(1, 4) == [[0], [], [], []]
    assert split_columns(10, 4) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert split_columns(1, 2) == [(0, 1), (1, 1)]
    with pytest.raises(HostError, match="cannot split 0 rows"):
        sub_batches(0, 4)


def test_models_are_packed_one_after_another_and_overflow_is_named():
    geo = EngineGeometry.of(TINY)
    rng = np.random.default_rng(0)
    a = [random_layer(rng, 6, 10), random_layer(rng, 10, 1, score=True)]
    b = [random_layer(rng, 9, 3)]
    programs = allocate_models({"a": a, "b": b}, geo)
    tiles_a = len(programs["a"].weight_words) // geo.rows
    assert programs["a"].weight_base == 0 and programs["b"].weight_base == tiles_a
    assert programs["b"].bias_base == len(programs["a"].bias_words)
    huge = [random_layer(rng, TINY.max_layer_dim, TINY.max_layer_dim)] * 3
    with pytest.raises(HostError, match="model 'huge' does not fit the engine after a, b"):
        allocate_models({"a": a, "b": b, "huge": huge}, geo)


def _query(setup, n=40):
    user = int(np.flatnonzero(setup.split.test.any(axis=1))[0])
    return user, setup.split.test_candidates(user)[:n]


def test_golden_backend_cascade_equals_the_golden(setup):
    user, cands = _query(setup, 300)
    figures = run_cascade(setup.golden, [("small", 64), ("large", 10)], user, cands,
                          GoldenTransport(), sub_batch=TINY.sub_batch)
    expected = setup.golden.run(Pipeline.parse("small:64,large:10"), user, cands)
    assert figures.ranking == expected.ranking.tolist()
    assert [s["candidates"] for s in figures.stages] == [300, 64]


class _WrongScores(GoldenTransport):
    """A backend with one bad score: the host must notice."""
    name = "broken"

    def run_mlp_jobs(self, models, jobs):
        results = super().run_mlp_jobs(models, jobs)
        if jobs[-1].model == "top":
            out = results[-1].out.copy()
            out[0] += 1
            results[-1] = JobResult(out)
        return results


def test_a_wrong_backend_is_caught(setup):
    user, cands = _query(setup)
    with pytest.raises(CascadeMismatch, match="broken top MLP output differs"):
        run_cascade(setup.golden, [("small", 8)], user, cands, _WrongScores(),
                    sub_batch=TINY.sub_batch)


def test_amaranth_backend_runs_a_real_cascade_bit_exact(setup):
    """The same cascade host code on the hardware in Amaranth's simulator (tiny core)."""
    user, cands = _query(setup, 24)
    sim = run_cascade(setup.golden, [("small", 6), ("medium", 2)], user, cands,
                      AmaranthTransport(TINY), sub_batch=TINY.sub_batch)
    gold = run_cascade(setup.golden, [("small", 6), ("medium", 2)], user, cands,
                       GoldenTransport(), sub_batch=TINY.sub_batch)
    assert sim.ranking == gold.ranking and sim.backend == "Amaranth simulator"
    assert all(s["mlp_engine_cycles"] > 0 for s in sim.stages)


@pytest.mark.cocotb
@pytest.mark.slow
def test_rtl_backend_runs_a_real_cascade_bit_exact(setup, tmp_path):
    """A real user's 40 candidates through small:8 -> medium:3 on the tiny RTL (Verilator):
    MLPs on the compute core (3 sub-batches dealt over 2 partitions), top-k on the unit.
    A slow test (77 s). In the fast suite: the same cascade through the Amaranth-simulator
    backend above (the same units behind the same protocol), the compute core's real-model
    job bench on the RTL (tests/test_compute_core.py), the top-k unit's cocotb bench, and
    whole cascades through the accelerator (tests/test_cosim.py). The top-k harness bench
    this transport drives (`rpaccel.tb.bench_topk`) runs only here."""
    from rpaccel.gen.simulators import unavailable_reason
    if unavailable_reason("verilator"):
        pytest.skip(unavailable_reason("verilator"))
    user, cands = _query(setup)
    rtl = run_cascade(setup.golden, [("small", 8), ("medium", 3)], user, cands,
                      CocotbTransport(TINY, "verilator", tmp_path), sub_batch=TINY.sub_batch)
    gold = run_cascade(setup.golden, [("small", 8), ("medium", 3)], user, cands,
                       GoldenTransport(), sub_batch=TINY.sub_batch)
    assert rtl.ranking == gold.ranking
    assert all(s["mlp_engine_cycles"] > 0 and s["topk_cycles"] > 0 for s in rtl.stages)
    assert model_mlps(setup.golden.quantized["small"])["top"][-1].score
