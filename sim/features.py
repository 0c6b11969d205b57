"""The train/validation/test split, the queries and the DLRM features of MovieLens-100K.

**Split** (:func:`split_interactions`): every rating is an implicit positive. Each user's
interactions (sorted by item) are shuffled with one ``np.random.default_rng(seed)`` walked
over the users in order; the first ``n - 2*round(0.1 n)`` go to train, the next
``round(0.1 n)`` to validation, the last ``round(0.1 n)`` to test (``round`` half up).

**Queries**: a query is one user. Its test candidates are every item with no train or
validation interaction of that user (about 1,600); its validation candidates every item
with no train interaction. The relevant items of a test query are the user's test items.

**Features** (:class:`Features`), per (user, item) candidate:

* eight embedding tables, in this order (:data:`TABLES`): user id, item id, occupation,
  gender, age bucket, zip prefix (first character if a digit, else its own bucket),
  release-year bucket (unknown year: its own bucket) and genres (a multi-hot bag, pooled
  by sum). The first seven are single-valued: :attr:`CandidateBatch.sparse` holds their
  row indices; the genre bag is :attr:`CandidateBatch.genres`, a boolean multi-hot matrix.
* four dense features in [0, 1] (:data:`DENSE`): normalised age, normalised release year
  (unknown: the mean), log item popularity and log user activity. The last two are counted
  on the **training split only**.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rpaccel.hw.errors import RpaccelError

from .data import MovieLens

__all__ = ["SPLIT_SEED", "TABLES", "DENSE", "Split", "split_interactions", "Features",
           "CandidateBatch", "build_features", "FeatureError", "AGE_EDGES", "YEAR_EDGES",
           "lookup_rows", "check_batch"]

#: Seed of the per-user random split.
SPLIT_SEED = 2021
#: Embedding tables in model order; the last one is the multi-valued genre bag.
TABLES = ("user", "item", "occupation", "gender", "age_bucket", "zip_prefix",
          "year_bucket", "genres")
#: Dense features in model order.
DENSE = ("age", "release_year", "item_popularity", "user_activity")
#: Age bucket edges (the MovieLens-1M groups): <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_EDGES = (18, 25, 35, 45, 50, 56)
#: Release-year bucket edges: <1950, 1950s, 60s, 70s, 80s, 1990-94, 95, 96, 97, 98+;
#: an unknown year is the bucket after the last.
YEAR_EDGES = (1950, 1960, 1970, 1980, 1990, 1995, 1996, 1997, 1998)


class FeatureError(RpaccelError, ValueError):
    """A bad user, candidate list or feature index; the message names it."""


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


@dataclass(frozen=True)
class Split:
    """Per-user 80/10/10 split as boolean (users, items) masks."""

    seed: int
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray

    @property
    def n_users(self) -> int:
        return self.train.shape[0]

    @property
    def n_items(self) -> int:
        return self.train.shape[1]

    def pairs(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(users, items) of one part ("train", "valid" or "test"), sorted by user, item."""
        return np.nonzero(getattr(self, part))

    def test_candidates(self, user: int) -> np.ndarray:
        """Every item with no train or validation interaction of ``user``, ascending."""
        return np.flatnonzero(~(self.train[user] | self.valid[user]))

    def valid_candidates(self, user: int) -> np.ndarray:
        """Every item with no train interaction of ``user``, ascending."""
        return np.flatnonzero(~self.train[user])

    def test_items(self, user: int) -> np.ndarray:
        return np.flatnonzero(self.test[user])

    def valid_items(self, user: int) -> np.ndarray:
        return np.flatnonzero(self.valid[user])


def split_interactions(ml: MovieLens, seed: int = SPLIT_SEED,
                       fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> Split:
    """The per-user random split described in the module docstring."""
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise FeatureError(f"split fractions must be three non-negative numbers summing to 1, "
                           f"not {fractions}")
    masks = {part: np.zeros((ml.n_users, ml.n_items), dtype=bool)
             for part in ("train", "valid", "test")}
    order = np.lexsort((ml.inter_item, ml.inter_user))
    users, items = ml.inter_user[order], ml.inter_item[order]
    if users.size and np.any((np.diff(users) == 0) & (np.diff(items) == 0)):
        raise FeatureError("the interactions hold a (user, item) pair twice")
    starts = np.searchsorted(users, np.arange(ml.n_users + 1))
    rng = np.random.default_rng(seed)
    for user in range(ml.n_users):
        own = items[starts[user]:starts[user + 1]]
        n = own.size
        n_valid = _round_half_up(fractions[1] * n)
        n_test = _round_half_up(fractions[2] * n)
        n_train = n - n_valid - n_test
        shuffled = own[rng.permutation(n)]
        masks["train"][user, shuffled[:n_train]] = True
        masks["valid"][user, shuffled[n_train:n_train + n_valid]] = True
        masks["test"][user, shuffled[n_train + n_valid:]] = True
    return Split(seed=seed, **masks)


@dataclass(frozen=True)
class CandidateBatch:
    """The model inputs of one query's candidates (one row per candidate).

    ``sparse`` (B, 7) int64 row indices of the single-valued tables in :data:`TABLES` order,
    ``genres`` (B, G) bool multi-hot genre bags, ``dense`` (B, 4) float32 in :data:`DENSE`
    order, ``user`` the query's user, ``items`` (B,) the candidate ids.
    """

    user: int
    items: np.ndarray
    sparse: np.ndarray
    genres: np.ndarray
    dense: np.ndarray

    def __len__(self) -> int:
        return int(self.items.size)

    @property
    def rows_fetched(self) -> int:
        """Embedding rows this batch reads: every single-valued row plus every genre row."""
        return int(self.sparse.size + np.count_nonzero(self.genres))


@dataclass(frozen=True)
class Features:
    """Feature tables of every user and item (see the module docstring).

    ``user_sparse`` (U, 5): user, occupation, gender, age bucket, zip prefix.
    ``item_sparse`` (I, 2): item, release-year bucket. ``item_genres`` (I, G) bool.
    ``user_dense`` (U, 2): age, activity. ``item_dense`` (I, 2): release year, popularity.
    ``table_rows`` the number of rows of each table of :data:`TABLES`.
    """

    table_rows: tuple[int, ...]
    vocabularies: dict
    user_sparse: np.ndarray
    item_sparse: np.ndarray
    item_genres: np.ndarray
    user_dense: np.ndarray
    item_dense: np.ndarray

    @property
    def n_users(self) -> int:
        return self.user_sparse.shape[0]

    @property
    def n_items(self) -> int:
        return self.item_sparse.shape[0]

    @property
    def n_tables(self) -> int:
        return len(self.table_rows)

    @property
    def n_dense(self) -> int:
        return len(DENSE)

    def check_user(self, user) -> int:
        if isinstance(user, bool) or not isinstance(user, (int, np.integer)):
            raise FeatureError(f"user must be an integer index, not {user!r}")
        if not 0 <= int(user) < self.n_users:
            raise FeatureError(f"user {int(user)} is out of range [0, {self.n_users})")
        return int(user)

    def check_items(self, items) -> np.ndarray:
        """``items`` as a 1-D int64 array of unique in-range ids; anything else raises."""
        arr = np.asarray(items)
        if arr.ndim != 1:
            raise FeatureError(f"candidate ids must be a 1-D list, not shape {arr.shape}")
        if arr.size == 0:
            raise FeatureError("the candidate list is empty")
        if arr.dtype.kind not in "iu":
            raise FeatureError(f"candidate ids must be integers, not {arr.dtype}")
        arr = arr.astype(np.int64)
        bad = arr[(arr < 0) | (arr >= self.n_items)]
        if bad.size:
            raise FeatureError(f"candidate id {int(bad[0])} is out of range "
                               f"[0, {self.n_items})")
        if np.unique(arr).size != arr.size:
            raise FeatureError("candidate ids within one query must be unique")
        return arr

    def batch(self, user, items) -> CandidateBatch:
        """The inputs of ``user``'s query over the candidate ``items`` (validated)."""
        user = self.check_user(user)
        items = self.check_items(items)
        u_sparse = np.broadcast_to(self.user_sparse[user], (items.size, 5))
        i_sparse = self.item_sparse[items]
        sparse = np.column_stack([u_sparse[:, 0], i_sparse[:, 0], u_sparse[:, 1:5],
                                  i_sparse[:, 1]])
        u_dense = np.broadcast_to(self.user_dense[user], (items.size, 2))
        i_dense = self.item_dense[items]
        dense = np.column_stack([u_dense[:, 0], i_dense[:, 0], i_dense[:, 1], u_dense[:, 1]])
        return CandidateBatch(user=user, items=items, sparse=sparse,
                              genres=self.item_genres[items], dense=dense.astype(np.float32))

    def pair_batch(self, users, items) -> CandidateBatch:
        """Inputs of arbitrary (user, item) pairs (training and calibration); ``user`` = -1."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        u_sparse, i_sparse = self.user_sparse[users], self.item_sparse[items]
        sparse = np.column_stack([u_sparse[:, 0], i_sparse[:, 0], u_sparse[:, 1:5],
                                  i_sparse[:, 1]])
        u_dense, i_dense = self.user_dense[users], self.item_dense[items]
        dense = np.column_stack([u_dense[:, 0], i_dense[:, 0], i_dense[:, 1], u_dense[:, 1]])
        return CandidateBatch(user=-1, items=items, sparse=sparse,
                              genres=self.item_genres[items], dense=dense.astype(np.float32))


def lookup_rows(table: np.ndarray, index, name: str) -> np.ndarray:
    """``table[index]``; an index outside the table raises (numpy would wrap a negative one)."""
    index = np.asarray(index)
    if index.size and (index.min() < 0 or index.max() >= table.shape[0]):
        bad = index.min() if index.min() < 0 else index.max()
        raise FeatureError(f"table {name} has {table.shape[0]} rows; index {int(bad)} is "
                           f"out of range")
    return table[index]


def check_batch(batch: CandidateBatch, n_single: int, n_genres: int, n_dense: int) -> None:
    """Raise unless the batch has the columns a model with these inputs reads."""
    if batch.sparse.ndim != 2 or batch.sparse.shape[1] != n_single:
        raise FeatureError(f"the model has {n_single} single-valued tables, the batch "
                           f"{batch.sparse.shape[1:]} sparse columns")
    if batch.genres.ndim != 2 or batch.genres.shape[1] != n_genres:
        raise FeatureError(f"the model's genre table has {n_genres} rows, the batch's bags "
                           f"{batch.genres.shape[1:]} columns")
    if batch.dense.ndim != 2 or batch.dense.shape[1] != n_dense:
        raise FeatureError(f"the model takes {n_dense} dense features, the batch has "
                           f"{batch.dense.shape[1:]}")


def _vocabulary(values) -> tuple[tuple[str, ...], np.ndarray]:
    vocab = tuple(sorted(set(values)))
    lookup = {v: i for i, v in enumerate(vocab)}
    return vocab, np.array([lookup[v] for v in values], dtype=np.int64)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x, dtype=np.float64)


def build_features(ml: MovieLens, split: Split) -> Features:
    """The features of every user and item; counts come from ``split.train`` only."""
    occ_vocab, occupation = _vocabulary(ml.user_occupation)
    gen_vocab, gender = _vocabulary(ml.user_gender)
    age_bucket = np.searchsorted(np.array(AGE_EDGES), ml.user_age, side="right")
    zip_prefix = np.array([int(z[0]) if z[:1].isdigit() else 10 for z in ml.user_zip],
                          dtype=np.int64)
    known = ml.item_year >= 0
    year_bucket = np.where(known, np.searchsorted(np.array(YEAR_EDGES), ml.item_year,
                                                  side="right"), len(YEAR_EDGES) + 1)
    genre_vocab = tuple(sorted({g for bag in ml.item_genres for g in bag}))
    genre_index = {g: i for i, g in enumerate(genre_vocab)}
    genres = np.zeros((ml.n_items, len(genre_vocab)), dtype=bool)
    for item, bag in enumerate(ml.item_genres):
        genres[item, [genre_index[g] for g in bag]] = True

    age = _minmax(ml.user_age.astype(np.float64))
    year = np.zeros(ml.n_items)
    year[known] = _minmax(ml.item_year[known].astype(np.float64))
    year[~known] = year[known].mean()
    item_count = split.train.sum(axis=0)
    user_count = split.train.sum(axis=1)
    popularity = np.log1p(item_count) / np.log1p(max(int(item_count.max()), 1))
    activity = np.log1p(user_count) / np.log1p(max(int(user_count.max()), 1))

    table_rows = (ml.n_users, ml.n_items, len(occ_vocab), len(gen_vocab), len(AGE_EDGES) + 1,
                  11, len(YEAR_EDGES) + 2, len(genre_vocab))
    return Features(
        table_rows=table_rows,
        vocabularies={"occupation": occ_vocab, "gender": gen_vocab, "genres": genre_vocab},
        user_sparse=np.column_stack([np.arange(ml.n_users), occupation, gender, age_bucket,
                                     zip_prefix]).astype(np.int64),
        item_sparse=np.column_stack([np.arange(ml.n_items), year_bucket]).astype(np.int64),
        item_genres=genres,
        user_dense=np.column_stack([age, activity]).astype(np.float32),
        item_dense=np.column_stack([year, popularity]).astype(np.float32),
    )
