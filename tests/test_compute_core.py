"""Compute core (hw/compute_core.py) in cocotb on both simulators, and its Verilog lint.

The random tests cover shapes, stalls and bad commands (tb/test_compute_core.py); the real
test runs the trained MovieLens models' MLPs on real candidates and compares with the
golden's integer trace (rpaccel.sim.quant.forward_int).
"""

import numpy as np
import pytest

from rpaccel.hw.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_bench, run_cocotb
from rpaccel.sim.mlp_program import model_mlps, save_mlp_jobs

from conftest import simulator_preset_cases

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py


#: The trained model each preset runs (the large model's weights do not fit `tiny`).
REAL_MODEL = {"tiny": "small", "default": "large"}


@pytest.fixture(scope="module")
def real_mlp_jobs(tmp_path_factory):
    """Job file per preset: partition 0 runs a trained model's bottom MLP on real dense
    features, partition 1 its top MLP (to the int32 scores) on the real interaction
    outputs of the same candidates."""
    from rpaccel.sim.golden import load_golden
    from rpaccel.sim.quant import forward_int

    setup = load_golden()
    rng = np.random.default_rng(3)
    user = int(rng.integers(setup.split.n_users))
    items = np.sort(rng.choice(setup.features.n_items, size=256, replace=False))
    batch = setup.golden.batch(user, items)

    files = {}
    for preset, model in REAL_MODEL.items():
        qm = setup.golden.quantized[model]
        trace = forward_int(qm, batch, trace=True)
        rows = PRESETS[preset].sub_batch
        path = tmp_path_factory.mktemp("jobs") / f"{preset}.npz"
        save_mlp_jobs(path, model_mlps(qm),
                      [("bottom", trace.dense[:rows], trace.bottom[-1][:rows]),
                       ("top", trace.top_input[:rows], trace.scores[:rows])])
        files[preset] = path
    return files


#: The 8x8 core on Icarus is always slow: Verilator runs the same bench on it in the fast
#: suite and Icarus runs it on `tiny`. On Icarus the real models take about 150k cycles at
#: ~400 cycles/s (7 minutes), the unit's bench 86 s.
@pytest.mark.parametrize("simulator, preset", simulator_preset_cases())
def test_compute_core_cocotb(simulator, preset):
    run_bench(generate(PRESETS[preset], "compute_core"), simulator)


# The real models on the 8x8 core are slow tests too (97 s on Verilator): the fast suite runs
# them on `tiny` on both simulators, the 8x8 core's own bench on Verilator, and real queries
# through the whole `tiny` accelerator (tests/test_cosim.py); `make demo` on `default`.
@pytest.mark.parametrize("simulator, preset", simulator_preset_cases(
    slow=(("icarus", "default"), ("verilator", "default"))))
def test_compute_core_runs_real_models(simulator, preset, real_mlp_jobs):
    run_cocotb(generate(PRESETS[preset], "compute_core"), simulator,
               "rpaccel.tb.mlp_jobs",
               extra_env={"RPACCEL_MLP_JOBS": str(real_mlp_jobs[preset])})


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_compute_core_lints_clean(preset):
    out = generate(PRESETS[preset], "compute_core")
    proc = lint(out.verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr


#: Four partitions of two columns on eight rows: gangs of two (partitions 0-1, 2-3) and of
#: four (all), the `paper` preset's shape of gangs on a core small enough to simulate.
FOUR_PARTITIONS = PRESETS["tiny"].replace(rows=8, cols=8, partitions=4, topk_units=4)


def test_compute_core_gangs_of_two_and_four_cocotb():
    from rpaccel.hw.mlp_engine import gangs
    assert gangs(FOUR_PARTITIONS) == [(2, 0), (2, 2), (4, 0)]
    run_bench(generate(FOUR_PARTITIONS, "compute_core"), "verilator")
