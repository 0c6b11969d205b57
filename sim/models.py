"""The three DLRM-style ranking models (small, medium, large): float32 forward pass,
training in numpy, and the saved artifacts.

**Architecture** (:class:`ModelSpec`), per candidate:

1. bottom MLP on the 4 dense features, ReLU after every layer, ending at the embedding
   dimension ``D``;
2. eight embedding lookups (:data:`rpaccel.sim.features.TABLES`; the genre bag is pooled
   by sum);
3. DLRM interaction of the ``n = 9`` vectors (bottom output first, then the eight pooled
   embeddings in table order): the dot product of every pair ``(i, j)``, ``i > j``, in the
   order of :func:`rpaccel.sim.numerics.interaction_pairs` (no self-interaction);
4. top MLP on ``concat(bottom output, 36 dot products)``, ReLU on the hidden layers, one
   output logit (the score; higher ranks first).

**Training** (:func:`train_model`): implicit feedback, negative sampling (uniform over the
items the user has no training interaction with), sampled-softmax or BPR loss, Adam, all
randomness from one ``np.random.default_rng(seed)``: the same configuration and data give
the same weights on the same machine.

**Artifacts** (:func:`train_or_load`): ``<data root>/models/<name>-<train hash>.npz`` (the
arrays) and ``.json`` (metadata: model spec, training configuration and its hash, dataset
checksum, SHA-256 of the arrays). Loading checks all of them and raises
:class:`ArtifactError` naming what is wrong; ``rpaccel train --force`` rebuilds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rpaccel.hw.errors import RpaccelError

from . import numerics
from .blas import blas_threads
from .data import dataset_checksum
from .files import atomic_write, data_root, file_lock
from .features import DENSE, TABLES, CandidateBatch, Features, Split, check_batch, lookup_rows

__all__ = ["ModelSpec", "TrainConfig", "MODEL_NAMES", "SPECS", "TRAIN_CONFIGS", "FloatModel",
           "ArtifactError", "ModelError", "init_model", "forward_float", "train_model",
           "train_hash", "save_model", "load_model", "train_or_load", "artifact_paths",
           "arrays_checksum", "MODEL_VERSION", "get_spec"]

#: Part of every training hash: bump it when the features or the training code change, so
#: artifacts trained by older code are not reused.
MODEL_VERSION = 1
ARTIFACT_FORMAT = 1


class ModelError(RpaccelError, ValueError):
    """An unknown model name or inconsistent model dimensions."""


class ArtifactError(RpaccelError):
    """A saved model that is missing, corrupt or does not match; the message says which."""


@dataclass(frozen=True)
class ModelSpec:
    """Layer sizes of one model. ``bottom`` and ``top`` list each layer's output size."""

    name: str
    emb_dim: int
    bottom: tuple[int, ...]
    top: tuple[int, ...]
    n_tables: int = len(TABLES)
    n_dense: int = len(DENSE)

    def __post_init__(self):
        if not self.bottom or self.bottom[-1] != self.emb_dim:
            raise ModelError(f"model {self.name}: the bottom MLP must end at the embedding "
                             f"dimension {self.emb_dim}, not {self.bottom}")
        if not self.top or self.top[-1] != 1:
            raise ModelError(f"model {self.name}: the top MLP must end in one logit, "
                             f"not {self.top}")

    @property
    def n_vectors(self) -> int:
        """Vectors entering the interaction: the bottom output and one per table."""
        return self.n_tables + 1

    @property
    def n_pairs(self) -> int:
        return self.n_vectors * (self.n_vectors - 1) // 2

    @property
    def bottom_dims(self) -> tuple[int, ...]:
        return (self.n_dense, *self.bottom)

    @property
    def top_dims(self) -> tuple[int, ...]:
        return (self.emb_dim + self.n_pairs, *self.top)

    @property
    def mlp_macs(self) -> int:
        dims = [self.bottom_dims, self.top_dims]
        return sum(a * b for d in dims for a, b in zip(d[:-1], d[1:]))

    @property
    def interaction_macs(self) -> int:
        return self.n_pairs * self.emb_dim

    @property
    def macs_per_candidate(self) -> int:
        """Multiply-accumulates of one candidate: MLP layers plus interaction dot products."""
        return self.mlp_macs + self.interaction_macs

    def describe(self) -> str:
        dash = lambda d: "-".join(map(str, d))  # noqa: E731
        return (f"emb {self.emb_dim}, bottom {dash(self.bottom_dims)}, "
                f"top {dash(self.top_dims)}, {self.macs_per_candidate} MACs/candidate")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained weights besides the data."""

    epochs: int
    batch_size: int
    lr: float
    negatives: int
    loss: str = "softmax"      # "softmax" (sampled softmax) or "bpr"
    l2: float = 0.0            # L2 on the embedding rows of each batch
    weight_decay: float = 0.0  # decoupled decay of the MLP weights
    init_std: float = 0.1      # embedding initialisation
    lr_decay: bool = True      # decay the learning rate linearly to lr/10 over the run
    act_l2: float = 0.0        # L2 on the bottom-MLP output (keeps its int8 range tight)
    seed: int = 7

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


MODEL_NAMES = ("small", "medium", "large")

#: The three models in the spirit of RecPipe's RM-small, RM-med and RM-large.
SPECS = {
    "small": ModelSpec("small", 4, (16, 4), (16, 1)),
    "medium": ModelSpec("medium", 16, (32, 16), (64, 1)),
    "large": ModelSpec("large", 32, (64, 32), (128, 64, 1)),
}

#: Training of each model (tuned on the validation split; see docs/golden.md).
TRAIN_CONFIGS = {
    "small": TrainConfig(epochs=8, batch_size=1024, lr=0.005, negatives=16, l2=0.5,
                         weight_decay=1.0, act_l2=0.1),
    "medium": TrainConfig(epochs=4, batch_size=1024, lr=0.005, negatives=16, l2=0.5,
                          weight_decay=1.0, act_l2=0.1),
    "large": TrainConfig(epochs=3, batch_size=1024, lr=0.005, negatives=16, l2=0.5,
                         weight_decay=1.0),
}


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: "
                         f"{', '.join(SPECS)}") from None


# -- the float model ------------------------------------------------------------------------
@dataclass
class FloatModel:
    """Float32 parameters: ``tables`` (one (rows, D) array per table), ``bottom`` and
    ``top`` lists of ``(weight (in, out), bias (out,))``."""

    spec: ModelSpec
    tables: list
    bottom: list
    top: list

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"table_{name}": t for name, t in zip(TABLES, self.tables)}
        for part in ("bottom", "top"):
            for i, (w, b) in enumerate(getattr(self, part)):
                out[f"{part}_w{i}"] = w
                out[f"{part}_b{i}"] = b
        return out

    def params(self) -> list[np.ndarray]:
        """Every parameter array, in a fixed order (the optimiser's order)."""
        return list(self.arrays().values())

    @classmethod
    def expected_shapes(cls, spec: ModelSpec, table_rows) -> dict[str, tuple]:
        shapes = {f"table_{n}": (r, spec.emb_dim) for n, r in zip(TABLES, table_rows)}
        for part, dims in (("bottom", spec.bottom_dims), ("top", spec.top_dims)):
            for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
                shapes[f"{part}_w{i}"] = (a, b)
                shapes[f"{part}_b{i}"] = (b,)
        return shapes

    @classmethod
    def from_arrays(cls, spec: ModelSpec, arrays: dict) -> "FloatModel":
        tables = [arrays[f"table_{n}"] for n in TABLES]
        parts = {}
        for part, dims in (("bottom", spec.bottom_dims), ("top", spec.top_dims)):
            parts[part] = [(arrays[f"{part}_w{i}"], arrays[f"{part}_b{i}"])
                           for i in range(len(dims) - 1)]
        return cls(spec, tables, parts["bottom"], parts["top"])

    def check_features(self, features: Features) -> None:
        """Raise :class:`ModelError` unless the model's tables and inputs fit ``features``."""
        check_dims(self.spec, [t.shape[0] for t in self.tables], features)


def check_dims(spec: ModelSpec, table_rows, features: Features) -> None:
    if spec.n_tables != features.n_tables or len(table_rows) != features.n_tables:
        raise ModelError(f"model {spec.name} has {len(table_rows)} embedding tables, the "
                         f"features {features.n_tables}")
    if spec.n_dense != features.n_dense:
        raise ModelError(f"model {spec.name} takes {spec.n_dense} dense features, the "
                         f"features have {features.n_dense}")
    for name, rows, want in zip(TABLES, table_rows, features.table_rows):
        if rows != want:
            raise ModelError(f"model {spec.name}: table {name} has {rows} rows, the features "
                             f"index {want}")


def init_model(spec: ModelSpec, table_rows, rng: np.random.Generator,
               init_std: float = 0.1) -> FloatModel:
    tables = [(rng.standard_normal((r, spec.emb_dim)) * init_std).astype(np.float32)
              for r in table_rows]

    def mlp(dims):
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            w = rng.standard_normal((a, b)) * np.sqrt(2.0 / a)
            layers.append((w.astype(np.float32), np.zeros(b, dtype=np.float32)))
        return layers

    return FloatModel(spec, tables, mlp(spec.bottom_dims), mlp(spec.top_dims))


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = numerics.interaction_pairs(n)
    return (np.array([p[0] for p in pairs], dtype=np.int64),
            np.array([p[1] for p in pairs], dtype=np.int64))


def forward_float(model: FloatModel, batch: CandidateBatch, *, tape: bool = False):
    """Float32 scores (B,) of a batch; with ``tape=True`` also what backprop needs.

    The intermediates in the tape (``bottom``: each bottom layer's output, ``z``: the
    interaction vectors (B, n, D), ``dots`` (B, pairs), ``top``: each top layer's output)
    are also what calibration reads.
    """
    spec = model.spec
    n_single = spec.n_tables - 1
    check_batch(batch, n_single, model.tables[-1].shape[0], spec.n_dense)
    h = batch.dense.astype(np.float32, copy=False)
    bottom_in, bottom_out = [], []
    for w, b in model.bottom:
        bottom_in.append(h)
        h = np.maximum(h @ w + b, 0)
        bottom_out.append(h)
    genres = batch.genres.astype(np.float32)
    vecs = [h] + [lookup_rows(model.tables[t], batch.sparse[:, t], TABLES[t])
                  for t in range(n_single)]
    vecs.append(genres @ model.tables[-1])
    z = np.stack(vecs, axis=1)
    pi, pj = _pairs(spec.n_vectors)
    dots = np.matmul(z, z.transpose(0, 2, 1))[:, pi, pj]
    t = np.concatenate([h, dots], axis=1)
    top_in, top_out = [], []
    last = len(model.top) - 1
    for layer, (w, b) in enumerate(model.top):
        top_in.append(t)
        t = t @ w + b
        if layer < last:
            t = np.maximum(t, 0)
        top_out.append(t)
    scores = t[:, 0]
    if not tape:
        return scores
    return scores, dict(batch=batch, genres=genres, bottom_in=bottom_in, bottom=bottom_out,
                        z=z, dots=dots, top_in=top_in, top=top_out)


def _backward(model: FloatModel, tp: dict, dscores: np.ndarray, l2: float,
              act_l2: float = 0.0) -> dict:
    """Gradients of ``sum(dscores * scores) + l2/2 * mean_b sum ||embedding rows||^2
    + act_l2/2 * mean_b ||bottom output||^2``."""
    spec = model.spec
    batch, z = tp["batch"], tp["z"]
    grads = {}
    dt = dscores[:, None].astype(np.float32)
    last = len(model.top) - 1
    for layer in range(last, -1, -1):
        w, _ = model.top[layer]
        if layer < last:
            dt = dt * (tp["top"][layer] > 0)
        grads[f"top_w{layer}"] = tp["top_in"][layer].T @ dt
        grads[f"top_b{layer}"] = dt.sum(axis=0)
        dt = dt @ w.T
    d = spec.emb_dim
    dh = dt[:, :d]
    ddots = dt[:, d:]
    n = spec.n_vectors
    pi, pj = _pairs(n)
    gram = np.zeros((z.shape[0], n, n), dtype=np.float32)
    gram[:, pi, pj] = ddots
    gram += gram.transpose(0, 2, 1)
    dz = gram @ z
    if l2:
        dz[:, 1:] += (l2 / z.shape[0]) * z[:, 1:]
    dh = dh + dz[:, 0]
    if act_l2:
        dh += (act_l2 / z.shape[0]) * z[:, 0]
    for layer in range(len(model.bottom) - 1, -1, -1):
        w, _ = model.bottom[layer]
        dh = dh * (tp["bottom"][layer] > 0)
        grads[f"bottom_w{layer}"] = tp["bottom_in"][layer].T @ dh
        grads[f"bottom_b{layer}"] = dh.sum(axis=0)
        dh = dh @ w.T
    for t, name in enumerate(TABLES[:-1]):
        g = np.zeros_like(model.tables[t])
        np.add.at(g, batch.sparse[:, t], dz[:, 1 + t])
        grads[f"table_{name}"] = g
    grads[f"table_{TABLES[-1]}"] = tp["genres"].T @ dz[:, -1]
    return grads


def _loss_grad(kind: str, pos: np.ndarray, neg: np.ndarray):
    """Mean loss and its gradient w.r.t. the positive (b,) and negative (b, k) scores."""
    b = pos.shape[0]
    if kind == "softmax":
        logits = np.concatenate([pos[:, None], neg], axis=1).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        loss = float(-np.log(np.maximum(prob[:, 0], 1e-300)).mean())
        grad = prob / b
        grad[:, 0] -= 1.0 / b
        return loss, grad[:, 0], grad[:, 1:]
    if kind == "bpr":
        diff = (pos[:, None] - neg).astype(np.float64)
        loss = float(np.logaddexp(0.0, -diff).mean())
        sig = 0.5 * (1.0 - np.tanh(0.5 * diff))  # sigmoid(-diff), overflow-free
        gneg = sig / diff.size
        return loss, -gneg.sum(axis=1), gneg
    raise ModelError(f"unknown loss {kind!r}; use 'softmax' or 'bpr'")


def sample_negatives(rng: np.random.Generator, train: np.ndarray, users: np.ndarray,
                     k: int) -> np.ndarray:
    """(len(users), k) items drawn uniformly among each user's non-training items."""
    n_items = train.shape[1]
    neg = rng.integers(0, n_items, size=(users.size, k))
    bad = train[users[:, None], neg]
    while bad.any():
        neg[bad] = rng.integers(0, n_items, size=int(bad.sum()))
        bad = train[users[:, None], neg]
    return neg


class _Adam:
    def __init__(self, params: dict, lr: float, weight_decay: float,
                 beta1=0.9, beta2=0.999, eps=1e-8):
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, beta1, beta2, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params: dict, grads: dict) -> None:
        self.t += 1
        c1 = 1 - self.b1 ** self.t
        c2 = 1 - self.b2 ** self.t
        for name, p in params.items():
            g = grads[name]
            m, v = self.m[name], self.v[name]
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * g * g
            p -= (self.lr / c1) * m / (np.sqrt(v / c2) + self.eps)
            if self.wd and "_w" in name and not name.startswith("table_"):
                p -= self.lr * self.wd * p


def train_model(spec: ModelSpec, cfg: TrainConfig, features: Features, split: Split, *,
                progress=None, on_epoch=None) -> tuple[FloatModel, dict]:
    """Train one model; the model and a summary (final loss, seconds). Runs on one BLAS
    thread (:mod:`rpaccel.sim.blas`). ``on_epoch(model, epoch)`` is called after each epoch
    (for learning curves)."""
    with blas_threads(1):
        return _train(spec, cfg, features, split, progress, on_epoch)


def _train(spec, cfg, features, split, progress, on_epoch):
    rng = np.random.default_rng(cfg.seed)
    model = init_model(spec, features.table_rows, rng, cfg.init_std)
    params = model.arrays()
    opt = _Adam(params, cfg.lr, cfg.weight_decay)
    users, items = split.pairs("train")
    n = users.size
    steps = cfg.epochs * -(-n // cfg.batch_size)
    step = 0
    t0 = time.perf_counter()
    loss = float("nan")
    for epoch in range(cfg.epochs):
        perm = rng.permutation(n)
        total, count = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start:start + cfg.batch_size]
            u, i = users[idx], items[idx]
            neg = sample_negatives(rng, split.train, u, cfg.negatives)
            batch = features.pair_batch(np.concatenate([u, np.repeat(u, cfg.negatives)]),
                                        np.concatenate([i, neg.ravel()]))
            scores, tp = forward_float(model, batch, tape=True)
            b = idx.size
            step_loss, gpos, gneg = _loss_grad(cfg.loss, scores[:b],
                                               scores[b:].reshape(b, cfg.negatives))
            dscores = np.concatenate([gpos, gneg.ravel()]).astype(np.float32)
            grads = _backward(model, tp, dscores, cfg.l2, cfg.act_l2)
            if cfg.lr_decay:
                opt.lr = cfg.lr * (1.0 - 0.9 * step / steps)
            opt.step(params, grads)
            step += 1
            total += step_loss * b
            count += b
        loss = total / count
        if progress:
            progress(f"{spec.name}: epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f} "
                     f"({time.perf_counter() - t0:.0f} s)")
        if on_epoch:
            on_epoch(model, epoch)
    return model, {"final_loss": loss, "train_seconds": round(time.perf_counter() - t0, 2)}


# -- artifacts --------------------------------------------------------------------------------
def train_hash(spec: ModelSpec, cfg: TrainConfig, split_seed: int) -> str:
    """Short hash of everything that determines the weights (besides the numpy build)."""
    blob = json.dumps({"spec": spec.to_dict(), "train": cfg.to_dict(), "split_seed": split_seed,
                       "model_version": MODEL_VERSION, "data": dataset_checksum()},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def artifact_paths(name: str, thash: str, root: Path | None = None) -> tuple[Path, Path]:
    folder = (Path(root) if root is not None else data_root()) / "models"
    return folder / f"{name}-{thash}.npz", folder / f"{name}-{thash}.json"


def save_model(model: FloatModel, meta: dict, npz: Path, meta_path: Path) -> None:
    """Write the arrays, then the metadata (the metadata's presence marks completion)."""
    arrays = model.arrays()
    meta = dict(meta, arrays_sha256=arrays_checksum(arrays),
                arrays={k: list(v.shape) for k, v in sorted(arrays.items())})

    def write_npz(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(npz, write_npz)
    atomic_write(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_model(meta_path: Path, features: Features | None = None) -> tuple[FloatModel, dict]:
    """Load and verify an artifact; :class:`ArtifactError` names any problem."""
    meta_path = Path(meta_path)
    npz = meta_path.with_suffix(".npz")
    fix = "run `rpaccel train --force` to rebuild it"
    try:
        meta = json.loads(meta_path.read_text())
        spec = ModelSpec(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in meta["spec"].items()})
        if meta.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"model artifact {meta_path.name} has format "
                                f"{meta.get('format')!r}, expected {ARTIFACT_FORMAT}; {fix}")
        want_sum = meta["arrays_sha256"]
        data_sum = meta["data_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, RpaccelError):
            raise
        raise ArtifactError(f"model metadata {meta_path.name} is unreadable "
                            f"({type(err).__name__}: {err}); {fix}") from None
    if data_sum != dataset_checksum():
        raise ArtifactError(f"model artifact {meta_path.name} was trained on other data "
                            f"(dataset checksum {data_sum[:12]}); {fix}")
    try:
        with open(npz, "rb") as stream, np.load(stream, allow_pickle=False) as handle:
            arrays = {k: handle[k] for k in handle.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ArtifactError(f"model arrays {npz.name} are unreadable "
                            f"({type(err).__name__}: {err}); {fix}") from None
    table_rows = (features.table_rows if features is not None
                  else [arrays[f"table_{n}"].shape[0] if f"table_{n}" in arrays else 0
                        for n in TABLES])
    expected = FloatModel.expected_shapes(spec, table_rows)
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise ArtifactError(f"model artifact {npz.name} lacks arrays {', '.join(missing)}; {fix}")
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise ArtifactError(f"model artifact {npz.name} has unexpected arrays "
                            f"{', '.join(extra)}; {fix}")
    for name, shape in expected.items():
        if arrays[name].shape != tuple(shape) or arrays[name].dtype != np.float32:
            raise ArtifactError(f"model artifact {npz.name}: array {name} is "
                                f"{arrays[name].dtype}{list(arrays[name].shape)}, expected "
                                f"float32{list(shape)} (mismatched dimensions); {fix}")
    got_sum = arrays_checksum(arrays)
    if got_sum != want_sum:
        raise ArtifactError(f"model artifact {npz.name} fails its checksum (sha256 "
                            f"{got_sum[:12]}..., metadata says {want_sum[:12]}...); {fix}")
    return FloatModel.from_arrays(spec, arrays), meta


def train_or_load(name: str, features: Features, split: Split, *, force: bool = False,
                  root: Path | None = None, progress=None,
                  spec: ModelSpec | None = None, cfg: TrainConfig | None = None
                  ) -> tuple[FloatModel, dict]:
    """The trained model ``name``: loaded from its artifact, or trained and saved.

    Parallel processes serialise on a lock file, so a model is trained once.
    """
    spec = spec or get_spec(name)
    cfg = cfg or TRAIN_CONFIGS[name]
    thash = train_hash(spec, cfg, split.seed)
    npz, meta_path = artifact_paths(name, thash, root)
    if not force and meta_path.exists():
        return load_model(meta_path, features)
    with file_lock(npz.parent / ".lock"):
        if not force and meta_path.exists():
            return load_model(meta_path, features)
        model, summary = train_model(spec, cfg, features, split, progress=progress)
        meta = {"format": ARTIFACT_FORMAT, "model": name, "spec": spec.to_dict(),
                "train": cfg.to_dict(), "train_hash": thash, "split_seed": split.seed,
                "model_version": MODEL_VERSION, "data_sha256": dataset_checksum(),
                "numpy": np.__version__, **summary}
        save_model(model, meta, npz, meta_path)
        return load_model(meta_path, features)
