"""Compute core (hw/compute_core.py) in cocotb on both simulators, and its Verilog lint.

The random tests cover shapes, stalls and bad commands (tb/test_compute_core.py); the real
test runs the trained MovieLens models' MLPs on real candidates and compares with the
golden's integer trace (rpaccel.sim.quant.forward_int).
"""

import numpy as np
import pytest

from rpaccel.gen.config import PRESETS
from rpaccel.gen.generate import generate
from rpaccel.gen.simulators import lint, run_cocotb
from rpaccel.sim.mlp_program import IntLayer

RANDOM_TESTS = "random_mlps_on_all_partitions,bad_commands_then_good"


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_compute_core_cocotb(simulator, preset):
    run_cocotb(generate(PRESETS[preset], "compute_core"), simulator,
               "rpaccel.tb.test_compute_core", testcase=RANDOM_TESTS)


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

    def job(prefix, layers, x, expected):
        out = {f"{prefix}x": x, f"{prefix}expected": expected, f"{prefix}layers": len(layers)}
        for n, quant in enumerate(layers):
            layer = IntLayer.from_quant(quant)
            out[f"{prefix}l{n}_w"] = layer.w
            out[f"{prefix}l{n}_bias"] = layer.bias
            out[f"{prefix}l{n}_params"] = np.array(
                [layer.mult, layer.shift, layer.relu, layer.score])
        return out

    files = {}
    for preset, model in REAL_MODEL.items():
        qm = setup.golden.quantized[model]
        trace = forward_int(qm, batch, trace=True)
        rows = PRESETS[preset].sub_batch
        path = tmp_path_factory.mktemp("jobs") / f"{preset}.npz"
        np.savez(path, **job("p0_", qm.bottom, trace.dense[:rows], trace.bottom[-1][:rows]),
                 **job("p1_", qm.top, trace.top_input[:rows], trace.scores[:rows]))
        files[preset] = path
    return files


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_compute_core_runs_real_models(simulator, preset, real_mlp_jobs):
    run_cocotb(generate(PRESETS[preset], "compute_core"), simulator,
               "rpaccel.tb.test_compute_core", testcase="real_model_mlps",
               extra_env={"RPACCEL_MLP_JOBS": str(real_mlp_jobs[preset])})


@pytest.mark.parametrize("preset", ["tiny", "default"])
def test_compute_core_lints_clean(preset):
    out = generate(PRESETS[preset], "compute_core")
    proc = lint(out.verilog)
    assert proc.returncode == 0, proc.stdout + proc.stderr
