"""The embedding-cache study (sim/cache_study.py, ``rpaccel cache-study``): the host's static
policy (training counts, renumbering, plan), the synthetic Zipf trace, the study's curves and
the command's files."""


import numpy as np

from rpaccel.gen.cache_study_cli import format_study, plot_study
from rpaccel.gen.cli import build_parser
from rpaccel.hw.config import PRESETS
from rpaccel.sim.cache_model import hotness_order, plan_static
from rpaccel.sim.cache_study import renumber, simulate, study, zipf_traffic


def test_hotness_order_and_renumbering():
    counts = np.array([3, 9, 0, 9, 1])
    order = hotness_order(counts)
    assert order.tolist() == [1, 3, 0, 4, 2]           # hottest first, ties by lower index
    assert renumber([counts])[0][order].tolist() == list(range(5))


def test_plan_static_takes_the_globally_hottest_prefixes():
    rows = {(0, 0): 4, (0, 1): 3}
    counts = {(0, 0): np.array([10, 1, 1, 0]), (0, 1): np.array([8, 7, 6])}
    assert plan_static(rows, counts, 4) == {(0, 0): (0, 1), (0, 1): (1, 3)}
    assert plan_static(rows, counts, 100) == {(0, 0): (0, 4), (0, 1): (4, 3)}


def test_zipf_trace_is_seeded_and_skewed():
    a = zipf_traffic(rows=10 ** 4, tables=2, queries=2, candidates=200, seed=1)
    b = zipf_traffic(rows=10 ** 4, tables=2, queries=2, candidates=200, seed=1)
    assert a.lookups == b.lookups and len(a.lookups) == 800
    rows = np.array([lk.row for lk in a.lookups])
    assert np.mean(rows < 100) > 0.4                     # the head carries much of the mass


def test_study_curves_grow_with_capacity_and_equal_capacity_is_equal():
    base = PRESETS["default"]
    tr = zipf_traffic(rows=10 ** 4, tables=4, queries=4, candidates=300, seed=3)
    result = study([tr], base, [64, 256, 1024])
    entry = result["traffic"][tr.name]
    for kind in ("static_only", "dynamic_only", "static_dynamic"):
        rates = [r["hit_rate"] for r in entry[kind]]
        assert rates == sorted(rates), (kind, rates)
        for cap, r in zip([64, 256, 1024], entry[kind]):
            assert r["static_rows"] + r["dynamic_rows"] == cap
        # bytes per query are the misses' bursts
        r = entry[kind][-1]
        assert r["bytes_per_query"] * tr.queries == r["counters"]["bytes"]
    assert "zipf" in format_study(result)


def test_static_only_equals_a_stage_mask_of_zero():
    base = PRESETS["default"]
    tr = zipf_traffic(rows=5000, tables=2, queries=2, candidates=100, seed=4)
    a = simulate(tr, base, static_rows=128, dyn_rows=0)
    b = simulate(tr, base, static_rows=128, dyn_rows=64, stage_ways=(0, 0, 0, 0))
    assert a["hit_rate"] == b["hit_rate"] and a["bytes_per_query"] == b["bytes_per_query"]


def test_plot_and_cli_registration(tmp_path):
    base = PRESETS["default"]
    tr = zipf_traffic(rows=2000, tables=2, queries=2, candidates=50, seed=5)
    result = study([tr], base, [64, 128])
    plot_study(result, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    args = build_parser().parse_args(["cache-study", "--json", "x.json", "--plot", "x.png",
                                      "--users", "3"])
    assert args.users == 3 and args.func.__name__ == "cmd_cache_study"
