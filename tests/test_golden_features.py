"""The MovieLens-100K split, queries and features (real data, fetched on first use)."""

import dataclasses

import numpy as np
import pytest

from rpaccel.sim.data import ensure_dataset, load_movielens
from rpaccel.sim.features import (DENSE, TABLES, FeatureError, build_features,
                                  split_interactions)

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py


@pytest.fixture(scope="module")
def movielens():
    ensure_dataset()
    return load_movielens()


@pytest.fixture(scope="module")
def split(movielens):
    return split_interactions(movielens)


@pytest.fixture(scope="module")
def features(movielens, split):
    return build_features(movielens, split)


def test_dataset_shape(movielens):
    assert (movielens.n_users, movielens.n_items, movielens.n_interactions) == (943, 1682, 100_000)
    assert movielens.user_tokens[0] == "1" and movielens.item_tokens[-1] == "1682"
    # The two items without a numeric year (267 "unkonwn", 1412 "V") are marked -1.
    assert sorted(np.flatnonzero(movielens.item_year < 0) + 1) == [267, 1412]
    assert movielens.item_genres[0] == ("Animation", "Children's", "Comedy")


def test_split_is_80_10_10_per_user_and_a_partition(movielens, split):
    train, valid, test = split.train, split.valid, split.test
    assert not (train & valid).any() and not (train & test).any() and not (valid & test).any()
    everything = np.zeros_like(train)
    everything[movielens.inter_user, movielens.inter_item] = True
    assert np.array_equal(train | valid | test, everything)
    n = everything.sum(axis=1)
    tenth = np.floor(0.1 * n + 0.5)
    assert np.array_equal(valid.sum(axis=1), tenth) and np.array_equal(test.sum(axis=1), tenth)
    assert np.array_equal(train.sum(axis=1), n - 2 * tenth)
    assert np.all(np.abs(train.sum(axis=1) - 0.8 * n) <= 1)
    assert test.sum(axis=1).min() >= 2  # every user (>= 20 ratings) is a test query


def test_split_is_deterministic_for_a_seed(movielens, split):
    again = split_interactions(movielens)
    assert all(np.array_equal(getattr(split, p), getattr(again, p))
               for p in ("train", "valid", "test"))
    other = split_interactions(movielens, seed=split.seed + 1)
    assert not np.array_equal(split.test, other.test)
    assert np.array_equal(split.train | split.valid | split.test,
                          other.train | other.valid | other.test)


def test_candidates_exclude_seen_items(split):
    sizes = []
    for user in range(0, split.n_users, 7):
        test_c = split.test_candidates(user)
        valid_c = split.valid_candidates(user)
        assert not split.train[user, test_c].any() and not split.valid[user, test_c].any()
        assert split.test[user, test_c].sum() == split.test[user].sum()  # all relevant present
        assert not split.train[user, valid_c].any()
        assert split.valid[user, valid_c].sum() == split.valid[user].sum()
        assert np.all(np.diff(test_c) > 0)
        assert test_c.size == split.n_items - split.train[user].sum() - split.valid[user].sum()
        sizes.append(test_c.size)
    assert 1500 < np.mean(sizes) < 1682


def test_feature_tables_and_ranges(features):
    assert features.table_rows == (943, 1682, 21, 2, 7, 11, 11, 19)
    assert len(TABLES) == 8 and len(DENSE) == 4
    for col, rows in zip(features.user_sparse.T, [943, 21, 2, 7, 11]):
        assert col.min() >= 0 and col.max() < rows
    for col, rows in zip(features.item_sparse.T, [1682, 11]):
        assert col.min() >= 0 and col.max() < rows
    assert features.item_sparse[266, 1] == 10  # unknown release year: its own bucket
    assert features.item_genres.sum(axis=1).min() >= 1
    for dense in (features.user_dense, features.item_dense):
        assert dense.dtype == np.float32 and dense.min() >= 0 and dense.max() <= 1


def test_batch_layout(features, split):
    items = split.test_candidates(5)[:50]
    batch = features.batch(5, items)
    assert batch.sparse.shape == (50, 7) and batch.genres.shape == (50, 19)
    assert np.all(batch.sparse[:, 0] == 5) and np.array_equal(batch.sparse[:, 1], items)
    assert np.array_equal(batch.sparse[:, 2:6], np.broadcast_to(features.user_sparse[5, 1:], (50, 4)))
    assert np.array_equal(batch.sparse[:, 6], features.item_sparse[items, 1])
    assert np.array_equal(batch.dense[:, 0], np.full(50, features.user_dense[5, 0]))
    assert np.array_equal(batch.dense[:, 1:3], features.item_dense[items])
    assert np.array_equal(batch.dense[:, 3], np.full(50, features.user_dense[5, 1]))
    assert batch.rows_fetched == 50 * 7 + int(features.item_genres[items].sum())


def test_dense_features_use_the_training_split_only(movielens, split, features):
    # Moving validation and test interactions around changes nothing ...
    shuffled = dataclasses.replace(split, valid=split.test.copy(), test=split.valid.copy())
    same = build_features(movielens, shuffled)
    assert np.array_equal(same.item_dense, features.item_dense)
    assert np.array_equal(same.user_dense, features.user_dense)
    # ... while the counts follow the training interactions exactly.
    pop = split.train.sum(axis=0)
    expected = np.log1p(pop) / np.log1p(pop.max())
    assert np.allclose(features.item_dense[:, 1], expected, atol=1e-6)
    act = split.train.sum(axis=1)
    assert np.allclose(features.user_dense[:, 1], np.log1p(act) / np.log1p(act.max()), atol=1e-6)
    more = split.train.copy()
    more[0, :] = True
    bumped = build_features(movielens, dataclasses.replace(split, train=more))
    assert not np.array_equal(bumped.item_dense[:, 1], features.item_dense[:, 1])


@pytest.mark.parametrize("user, items, message", [
    (0, [], "the candidate list is empty"),
    (0, [0, 1682], r"candidate id 1682 is out of range \[0, 1682\)"),
    (0, [-1, 3], r"candidate id -1 is out of range \[0, 1682\)"),
    (0, [4, 4], "candidate ids within one query must be unique"),
    (0, [1.0, 2.0], "candidate ids must be integers, not float64"),
    (0, [[1, 2]], r"candidate ids must be a 1-D list, not shape \(1, 2\)"),
    (943, [1], r"user 943 is out of range \[0, 943\)"),
    (-1, [1], r"user -1 is out of range \[0, 943\)"),
])
def test_bad_queries(features, user, items, message):
    with pytest.raises(FeatureError, match=message):
        features.batch(user, items)
