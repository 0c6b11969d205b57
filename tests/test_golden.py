"""The golden model: integer forward pass, cascades, artifacts, bad input and ranking quality.

The three models are trained once (about three minutes on two cores) and cached under the
data folder; later runs load them. Parallel workers wait for the one that trains.
"""

import dataclasses
import json
import shutil

import numpy as np
import pytest

from rpaccel.gen.cli import main
from rpaccel.sim import numerics
from rpaccel.sim.blas import blas_threads
from rpaccel.sim.data import ensure_dataset
from rpaccel.sim.features import FeatureError
from rpaccel.sim.golden import (PIPELINES, Golden, GoldenError, Pipeline, Stage, load_golden)
from rpaccel.sim.metrics import popularity_ranking, ranking_metrics
from rpaccel.sim.models import (ArtifactError, ModelError, ModelSpec, artifact_paths,
                                forward_float, init_model, load_model, train_hash,
                                train_or_load, TRAIN_CONFIGS, SPECS)
from rpaccel.sim.quant import QuantizationError, CalibrationConfig, forward_int, quantize_model

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py


@pytest.fixture(scope="module")
def setup():
    ensure_dataset()
    return load_golden()


@pytest.fixture(scope="module")
def golden(setup):
    return setup.golden


# -- an independent integer re-computation (plain Python integers) ----------------------------
def _requant(acc, mult, shift):
    return (acc * mult + (1 << (shift - 1))) >> shift if shift else acc * mult


def _clamp(v):
    return max(-128, min(127, v))


def _layer(x, layer, relu, final=False):
    out = []
    for o in range(layer.weight.shape[1]):
        acc = int(layer.bias[o]) + sum(int(x[i]) * int(layer.weight[i, o]) for i in range(len(x)))
        assert -2**31 <= acc < 2**31
        if final:
            out.append(acc)
            continue
        y = _requant(acc, int(layer.mult), int(layer.shift))
        out.append(_clamp(max(y, 0) if relu else y))
    return out


def reference_score(qm, dense, sparse, genres):
    """One candidate's integer score and intermediates, written from docs/numerics.md."""
    x = [max(-127, min(127, round(float(d) / qm.dense_scale))) for d in dense]
    bottom = []
    for layer in qm.bottom:
        x = _layer(x, layer, relu=True)
        bottom.append(x)
    vectors = [x] + [[int(v) for v in qm.tables[t][int(sparse[t])]] for t in range(len(sparse))]
    rows = [qm.tables[-1][g] for g in np.flatnonzero(genres)]
    vectors.append([_clamp(sum(int(r[d]) for r in rows)) for d in range(qm.spec.emb_dim)])
    dots, p = [], 0
    for i in range(len(vectors)):
        for j in range(i):
            acc = sum(a * b for a, b in zip(vectors[i], vectors[j]))
            dots.append(_clamp(_requant(acc, int(qm.inter_mults[p]), int(qm.inter_shifts[p]))))
            p += 1
    t = x + dots
    for layer in qm.top[:-1]:
        t = _layer(t, layer, relu=True)
    score = _layer(t, qm.top[-1], relu=False, final=True)[0]
    return score, bottom, vectors[1:], dots


@pytest.mark.parametrize("model", ["small", "large"])
def test_integer_forward_matches_an_independent_recomputation(setup, golden, model):
    qm = golden.quantized[model]
    split, features = setup.split, setup.features
    items = split.test_candidates(7)
    # Some candidates with the most genres (the largest bags) and some at random.
    many = items[np.argsort(-features.item_genres[items].sum(axis=1), kind="stable")[:4]]
    pick = np.concatenate([many, np.random.default_rng(0).choice(items, 8, replace=False)])
    batch = features.batch(7, np.unique(pick))
    trace = forward_int(qm, batch, trace=True)
    assert np.array_equal(forward_int(qm, batch), trace.scores)
    for b in range(len(batch)):
        score, bottom, embs, dots = reference_score(qm, batch.dense[b], batch.sparse[b],
                                                    batch.genres[b])
        assert trace.scores[b] == score
        assert [list(layer[b]) for layer in trace.bottom] == bottom
        assert trace.embeddings[b].tolist() == embs
        assert trace.interaction[b].tolist() == dots
    assert trace.interaction.shape == (len(batch), 36)
    assert trace.top_input.shape == (len(batch), qm.spec.top_dims[0])


def test_quantized_arrays_respect_the_numerics(golden):
    for qm in golden.quantized.values():
        for table in qm.tables:
            assert table.min() >= -127 and table.max() <= 127 and not table.flags.writeable
        for layer in (*qm.bottom, *qm.top):
            assert layer.weight.min() >= -127 and layer.weight.max() <= 127
            assert np.abs(layer.bias).max() < 2**31
        for layer in (*qm.bottom, *qm.top[:-1]):
            assert 32768 <= layer.mult <= 65535 and 0 <= layer.shift <= numerics.SHIFT_MAX
        assert qm.top[-1].mult is None
        assert qm.inter_mults.shape == qm.inter_shifts.shape == (qm.spec.n_pairs,)


def test_integer_scores_track_the_float_logits(setup, golden):
    batch = setup.features.batch(11, setup.split.test_candidates(11))
    for name, qm in golden.quantized.items():
        fl = forward_float(golden.models[name], batch).astype(np.float64)
        q = forward_int(qm, batch) * qm.score_scale
        assert np.corrcoef(fl, q)[0, 1] > 0.995, name


def test_calibration_is_deterministic(setup, golden):
    again = quantize_model(golden.models["small"], setup.features, setup.split)
    ref = golden.quantized["small"]
    assert all(np.array_equal(a, b) for a, b in zip(again.tables, ref.tables))
    assert np.array_equal(again.inter_mults, ref.inter_mults)
    assert [(l.mult, l.shift) for l in again.top] == [(l.mult, l.shift) for l in ref.top]
    with pytest.raises(QuantizationError, match="percentile must be in"):
        quantize_model(golden.models["small"], setup.features, setup.split,
                       CalibrationConfig(percentile=20))


# -- cascades ---------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["int8", "float32"])
def test_each_stage_scores_exactly_what_the_previous_kept(setup, golden, precision):
    candidates = setup.split.test_candidates(3)
    result = golden.run(PIPELINES["3-stage"], 3, candidates, precision)
    assert [s.model for s in result.stages] == ["small", "medium", "large"]
    assert np.array_equal(result.stages[0].candidates, candidates)
    for prev, stage in zip(result.stages, result.stages[1:]):
        assert np.array_equal(stage.candidates, prev.kept)
    for stage in result.stages:
        assert stage.kept.size == stage.keep_k
        # kept = the best keep_k by (score desc, id asc), with their scores
        order = np.lexsort((stage.candidates, -stage.scores.astype(np.float64)))
        assert np.array_equal(stage.kept, stage.candidates[order[:stage.keep_k]])
        assert np.array_equal(stage.kept_scores, stage.scores[order[:stage.keep_k]])
        direct = golden.scores(stage.model, 3, stage.candidates, precision)
        assert np.array_equal(direct, stage.scores)
    assert np.array_equal(result.ranking, result.stages[-1].kept)
    cached = golden.run(PIPELINES["3-stage"], 3, candidates, precision, cache={})
    assert all(np.array_equal(a.kept, b.kept) for a, b in zip(result.stages, cached.stages))


def test_equal_scores_keep_the_lower_ids_first(setup, golden):
    qm = golden.quantized["large"]
    last = qm.top[-1]
    flat = dataclasses.replace(last, weight=np.zeros_like(last.weight))
    tie = Golden(setup.features, {"large": golden.models["large"]},
                 {"large": dataclasses.replace(qm, top=(*qm.top[:-1], flat))})
    candidates = np.array([900, 17, 5, 1200, 64, 3])
    result = tie.run(Pipeline("ties", (Stage("large", 4),)), 0, candidates)
    assert result.ranking.tolist() == [3, 5, 17, 64]
    assert np.all(result.stages[0].scores == last.bias[0])


def test_stage_one_of_a_cascade_is_the_single_stage_ranking(setup, golden):
    user = 20
    c = setup.split.test_candidates(user)
    single = golden.run(Pipeline("s", (Stage("small", 256),)), user, c)
    two = golden.run(PIPELINES["2-stage"], user, c)
    assert np.array_equal(single.ranking, two.stages[0].kept)


@pytest.mark.parametrize("pipeline, message", [
    (lambda: Pipeline("p", ()), "pipeline 'p' has no stages"),
    (lambda: Pipeline("p", (Stage("small", 0),)),
     r"pipeline 'p' stage 1 \(small\): keep_k must be a positive integer, not 0"),
    (lambda: Pipeline("p", (Stage("small", -5),)), "keep_k must be a positive integer, not -5"),
    (lambda: Pipeline("p", (Stage("small", 2.5),)), "keep_k must be a positive integer, not 2.5"),
    (lambda: Pipeline("p", (Stage("small", 64), Stage("large", 65))),
     r"stage 2 \(large\): keep_k 65 is larger than its input, the 64 candidates stage 1 keeps"),
    (lambda: Pipeline.parse("small:256,large"), "pipeline stage 'large' is not MODEL:KEEP_K"),
    (lambda: Pipeline.parse("small:many"), "keep_k 'many' is not an integer"),
])
def test_bad_pipelines(pipeline, message):
    with pytest.raises(GoldenError, match=message):
        pipeline()


def test_pipeline_parse():
    p = Pipeline.parse("small:256, medium:64,large:10", "3")
    assert p.stages == (Stage("small", 256), Stage("medium", 64), Stage("large", 10))
    assert p.to_dict()[1] == {"model": "medium", "keep_k": 64}


@pytest.mark.parametrize("precision", ["int8", "float32"])
@pytest.mark.parametrize("call, message", [
    (lambda g, p: g.run(Pipeline("x", (Stage("huge", 10),)), 0, [1, 2, 3], p),
     "unknown model 'huge'; known models: small, medium, large"),
    (lambda g, p: g.run(Pipeline("x", (Stage("small", 4),)), 0, [1, 2, 3], p),
     r"stage 1 \(small\): keep_k 4 is larger than its 3 input candidates"),
    (lambda g, p: g.run(PIPELINES["2-stage"], 0, [], p), "the candidate list is empty"),
    (lambda g, p: g.run(PIPELINES["1-stage-small"], 0, np.arange(10, 30).tolist() + [1682], p),
     r"candidate id 1682 is out of range \[0, 1682\)"),
    (lambda g, p: g.run(PIPELINES["1-stage-small"], 0, list(range(-1, 20)), p),
     r"candidate id -1 is out of range \[0, 1682\)"),
    (lambda g, p: g.run(PIPELINES["1-stage-small"], 0, [5] * 12, p),
     "candidate ids within one query must be unique"),
    (lambda g, p: g.run(PIPELINES["1-stage-small"], 943, list(range(20)), p),
     r"user 943 is out of range"),
    (lambda g, p: g.scores("medium", 0, np.array([1.5, 2.0]), p),
     "candidate ids must be integers"),
])
def test_bad_queries(golden, precision, call, message):
    with pytest.raises(GoldenError, match=message):
        call(golden, precision)


@pytest.mark.parametrize("column, value, message", [
    (2, -1, "table occupation has 21 rows; index -1 is out of range"),
    (5, 11, "table zip_prefix has 11 rows; index 11 is out of range"),
])
def test_feature_indices_are_never_wrapped(setup, golden, column, value, message):
    batch = setup.features.batch(0, [1, 2, 3])
    sparse = batch.sparse.copy()
    sparse[1, column] = value
    bad = dataclasses.replace(batch, sparse=sparse)
    with pytest.raises(FeatureError, match=message):
        forward_int(golden.quantized["small"], bad)
    with pytest.raises(FeatureError, match=message):
        forward_float(golden.models["small"], bad)
    short = dataclasses.replace(batch, genres=batch.genres[:, :18])
    with pytest.raises(FeatureError, match="genre table has 19 rows, the batch's bags"):
        forward_int(golden.quantized["small"], short)


def test_unknown_precision(golden):
    with pytest.raises(GoldenError, match="unknown precision 'int4'; use one of int8, float32"):
        golden.run(PIPELINES["1-stage-small"], 0, list(range(20)), "int4")


def test_mismatched_dimensions(setup, golden):
    features = setup.features
    rows = list(features.table_rows)
    rows[0] = 900
    wrong = init_model(SPECS["small"], rows, np.random.default_rng(0))
    with pytest.raises(GoldenError, match="mismatched dimensions: model small: table user has "
                                          "900 rows, the features index 943"):
        Golden(features, {"small": wrong}, {"small": golden.quantized["small"]})
    with pytest.raises(ModelError, match="table user has 900 rows"):
        quantize_model(wrong, features, setup.split)
    five = ModelSpec("small", 4, (16, 4), (16, 1), n_dense=5)
    odd = init_model(five, features.table_rows, np.random.default_rng(0))
    with pytest.raises(GoldenError, match="model small takes 5 dense features, the features "
                                          "have 4"):
        Golden(features, {"small": odd}, {"small": golden.quantized["small"]})
    with pytest.raises(GoldenError, match="float models .* and integer models .* differ"):
        Golden(features, {"small": golden.models["small"]}, {})
    with pytest.raises(ModelError, match="must end at the embedding dimension 8"):
        ModelSpec("x", 8, (16, 4), (16, 1))


def test_training_gradients_match_finite_differences(setup):
    """The hand-written backward pass of the trainer, checked in float64 on a tiny model."""
    from rpaccel.sim.models import FloatModel, _backward
    features = setup.features
    spec = ModelSpec("tiny", 2, (3, 2), (4, 1))
    rng = np.random.default_rng(1)
    base = init_model(spec, features.table_rows, rng, init_std=0.5)
    arrays = {k: v.astype(np.float64) + 0.1 * rng.standard_normal(v.shape)
              for k, v in base.arrays().items()}
    model = FloatModel.from_arrays(spec, arrays)
    batch = features.pair_batch(rng.integers(0, 943, 6), rng.integers(0, 1682, 6))
    weights = rng.standard_normal(6)
    l2, act_l2 = 0.3, 0.2

    def objective():
        scores, tape = forward_float(model, batch, tape=True)
        z = tape["z"]
        return (weights @ scores + l2 / (2 * len(batch)) * np.sum(z[:, 1:] ** 2)
                + act_l2 / (2 * len(batch)) * np.sum(z[:, 0] ** 2))

    _, tape = forward_float(model, batch, tape=True)
    grads = _backward(model, tape, weights, l2, act_l2)
    eps = 1e-6
    for name, param in model.arrays().items():
        for flat in rng.choice(param.size, size=min(4, param.size), replace=False):
            index = np.unravel_index(flat, param.shape)
            if name.startswith("table_") and name != "table_genres":
                column = {"table_user": 0, "table_item": 1}.get(name)
                if column is not None:  # pick a row the batch uses, or the gradient is 0
                    index = (int(batch.sparse[0, column]), index[1])
            keep = param[index]
            param[index] = keep + eps
            up = objective()
            param[index] = keep - eps
            down = objective()
            param[index] = keep
            assert grads[name][index] == pytest.approx((up - down) / (2 * eps), rel=1e-5,
                                                       abs=1e-7), name


@pytest.mark.parametrize("kind", ["softmax", "bpr"])
def test_loss_gradients_match_finite_differences(kind):
    from rpaccel.sim.models import _loss_grad
    rng = np.random.default_rng(2)
    pos, neg = rng.standard_normal(5), rng.standard_normal((5, 3))
    _, gpos, gneg = _loss_grad(kind, pos, neg)
    eps = 1e-6
    for which, grad in ((pos, gpos), (neg, gneg)):
        for index in np.ndindex(which.shape):
            keep = which[index]
            which[index] = keep + eps
            up = _loss_grad(kind, pos, neg)[0]
            which[index] = keep - eps
            down = _loss_grad(kind, pos, neg)[0]
            which[index] = keep
            assert grad[index] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-9)
    with pytest.raises(ModelError, match="unknown loss 'hinge'"):
        _loss_grad("hinge", pos, neg)


def test_model_sizes():
    macs = {n: s.macs_per_candidate for n, s in SPECS.items()}
    assert macs["small"] * 10 < macs["large"]
    assert macs["small"] < macs["medium"] < macs["large"]
    assert SPECS["large"].top_dims[0] == 32 + 36 and SPECS["small"].n_pairs == 36


# -- artifacts ----------------------------------------------------------------------------------
@pytest.fixture
def artifact(setup, tmp_path):
    """A copy of the small model's artifact in a temporary data root."""
    name = "small"
    npz, meta = artifact_paths(name, train_hash(SPECS[name], TRAIN_CONFIGS[name], setup.split.seed))
    dst_npz, dst_meta = artifact_paths(name, train_hash(SPECS[name], TRAIN_CONFIGS[name],
                                                        setup.split.seed), tmp_path)
    dst_npz.parent.mkdir(parents=True)
    shutil.copy(npz, dst_npz)
    shutil.copy(meta, dst_meta)
    return dst_npz, dst_meta


def _rewrite(npz, change):
    with np.load(npz) as handle:
        arrays = {k: handle[k] for k in handle.files}
    change(arrays)
    with open(npz, "wb") as f:
        np.savez(f, **arrays)


def test_intact_artifact_loads_identically(setup, golden, artifact):
    model, meta = load_model(artifact[1], setup.features)
    assert meta["train_hash"] == artifact[1].stem.split("-")[1]
    for a, b in zip(model.params(), golden.models["small"].params()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("damage, message", [
    (lambda npz, meta: _rewrite(npz, lambda a: a["top_w0"].__setitem__((0, 0), 0.5)),
     r"model artifact small-\w+\.npz fails its checksum"),
    (lambda npz, meta: _rewrite(npz, lambda a: a.pop("table_genres")),
     r"model artifact small-\w+\.npz lacks arrays table_genres; run `rpaccel train --force`"),
    (lambda npz, meta: _rewrite(npz, lambda a: a.__setitem__("extra", np.zeros(3))),
     "has unexpected arrays extra"),
    (lambda npz, meta: _rewrite(npz, lambda a: a.__setitem__("top_w0", a["top_w0"][:30])),
     r"array top_w0 is float32\[30, 16\], expected float32\[40, 16\] \(mismatched dimensions\)"),
    (lambda npz, meta: npz.write_bytes(npz.read_bytes()[:1000]),
     r"model arrays small-\w+\.npz are unreadable"),
    (lambda npz, meta: npz.unlink(), r"model arrays small-\w+\.npz are unreadable"),
    (lambda npz, meta: meta.write_text("{not json"), r"model metadata small-\w+\.json is unreadable"),
    (lambda npz, meta: meta.write_text(json.dumps({**json.loads(meta.read_text()),
                                                   "data_sha256": "0" * 64})),
     "was trained on other data"),
])
def test_damaged_artifacts_are_clear_errors(setup, artifact, damage, message):
    npz, meta = artifact
    damage(npz, meta)
    with pytest.raises(ArtifactError, match=message):
        load_model(meta, setup.features)
    # train_or_load reports the damage instead of silently retraining over it.
    with pytest.raises(ArtifactError, match=message):
        train_or_load("small", setup.features, setup.split, root=npz.parent.parent)


# -- quality ----------------------------------------------------------------------------------
def test_ranking_quality_beats_popularity_and_random(setup, golden):
    split = setup.split
    users = list(range(0, split.n_users, 5))
    relevant = [split.test_items(u) for u in users]
    cands = [split.test_candidates(u) for u in users]
    names = ("1-stage-small", "1-stage-large", "3-stage")
    ndcg = {}
    with blas_threads(1):
        for precision in ("int8", "float32"):
            caches = [{} for _ in users]  # stage-1 small scores shared by two pipelines
            for name in names:
                rank = [golden.run(PIPELINES[name], u, c, precision, cache=cache).ranking
                        for u, c, cache in zip(users, cands, caches)]
                ndcg[name, precision] = ranking_metrics(rank, relevant)["ndcg@10"]
    pop = split.train.sum(axis=0)
    ndcg["popular"] = ranking_metrics([popularity_ranking(c, pop, 10) for c in cands],
                                      relevant)["ndcg@10"]
    rng = np.random.default_rng(0)
    ndcg["random"] = ranking_metrics([rng.permutation(c)[:10] for c in cands],
                                     relevant)["ndcg@10"]
    print({k: round(v, 4) for k, v in ndcg.items()})
    assert ndcg["random"] < 0.03
    assert 0.10 < ndcg["popular"] < 0.20
    assert ndcg["1-stage-large", "int8"] >= 0.22
    assert ndcg["1-stage-large", "int8"] > ndcg["popular"] + 0.08
    assert ndcg["1-stage-small", "int8"] > ndcg["popular"] + 0.05
    assert ndcg["3-stage", "int8"] > 0.97 * ndcg["1-stage-large", "int8"]
    for name in ("1-stage-small", "1-stage-large", "3-stage"):
        assert abs(ndcg[name, "int8"] / ndcg[name, "float32"] - 1) < 0.03


def test_cli_eval_writes_the_report(setup, tmp_path, capsys):
    out = tmp_path / "q.json"
    assert main(["eval", "--users", "12", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1-stage-large" in text and "queries/s" in text
    report = json.loads(out.read_text())
    assert report["dataset"] == "ml-100k" and report["users"] == 12
    names = {(r["name"], r["precision"]) for r in report["pipelines"]}
    assert names == {(n, p) for n in PIPELINES for p in ("int8", "float32")}
    for row in report["pipelines"]:
        assert set(row) >= {"name", "stages", "precision", "ndcg@10", "recall@10", "hr@10",
                            "macs_per_query", "rows_per_query"}
        assert 0 <= row["ndcg@10"] <= 1 and row["macs_per_query"] > 0
    rows = {(r["name"], r["precision"]): r for r in report["pipelines"]}
    large = rows["1-stage-large", "int8"]
    n = large["macs_per_query"] / SPECS["large"].macs_per_candidate  # candidates per query
    assert n == pytest.approx(report["candidates_per_query"])
    three = rows["3-stage", "int8"]
    assert three["macs_per_query"] == pytest.approx(
        n * SPECS["small"].macs_per_candidate + 256 * SPECS["medium"].macs_per_candidate
        + 64 * SPECS["large"].macs_per_candidate)
    assert large["rows_per_query"] > 7 * n
    assert set(report["cpu_queries_per_s"]) == {"int8", "float32"}
    assert all(q > 0 for q in report["cpu_queries_per_s"].values())
    assert report["baselines"][0]["name"] == "most-popular"
