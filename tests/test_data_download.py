"""Downloads of named datasets, against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import write_idx, write_mnist_like
from vaelab.data import load
from vaelab.data.download import fetch_named
from vaelab.data.sources import IdxDataset, emnist_dataset, read_named
from vaelab.errors import VaelabError

FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """(served folder, base URL, list of requested paths) of an HTTP server in a thread."""
    root = tmp_path / "served"
    root.mkdir()
    handler = type("Handler", (_Quiet,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", handler.requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def empty_data(tmp_path, monkeypatch):
    """An empty $VAELAB_DATA and a fresh cache, so the dataset must be downloaded."""
    monkeypatch.setenv("VAELAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fake(folder: Path, **changes) -> IdxDataset:
    """A dataset whose published MD5s are those of the files the test wrote."""
    md5 = {f: _md5(folder / f) for pair in FILES.values() for f in pair}
    return dataclasses.replace(
        IdxDataset("fakeset", FILES, ("a", "b", "c"), md5, ("http://127.0.0.1:9/",)), **changes
    )


def test_download_verifies_and_caches(server, empty_data, monkeypatch):
    root, base, requests = server
    write_mnist_like(root / "fakeset", n_train=9, n_test=3)
    monkeypatch.setenv("VAELAB_MIRROR", base + "{name}/")
    ds = read_named(_fake(root / "fakeset"))
    assert ds.split_counts() == {"train": 9, "test": 3} and ds.class_names == ["a", "b", "c"]
    assert f"downloaded to {empty_data / 'fakeset'}" in ds.source
    assert sorted(p.name for p in (empty_data / "fakeset").iterdir()) == sorted(
        f for p in FILES.values() for f in p
    )
    assert len(requests) == 4
    again = read_named(_fake(root / "fakeset"))  # found in the cache: no second download
    assert len(requests) == 4 and "cached in" in again.source


def test_checksum_mismatch_is_an_error_and_removes_the_file(server, empty_data, monkeypatch):
    root, base, _ = server
    write_mnist_like(root, n_train=9, n_test=3)
    monkeypatch.setenv("VAELAB_MIRROR", base)
    ds = _fake(root)
    ds = dataclasses.replace(ds, md5={**ds.md5, "train-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(
        VaelabError, match="train-images-idx3-ubyte.gz has MD5 [0-9a-f]{32}, not the published 0{32}"
    ):
        fetch_named(ds)
    assert not [p.name for p in (empty_data / "fakeset").iterdir() if "train-images" in p.name]


def test_real_dataset_checks_the_published_md5(server, empty_data, monkeypatch):
    """kmnist from a mirror serving other bytes: refused by the built-in checksums."""
    root, base, _ = server
    write_mnist_like(root)
    monkeypatch.setenv("VAELAB_MIRROR", base)
    with pytest.raises(VaelabError, match="not the published bdb82020997e1d708af4cf47b453dcf7"):
        load("kmnist")


def test_no_mirror_reachable_names_vaelab_data(empty_data, tmp_path, monkeypatch):
    monkeypatch.setenv("VAELAB_MIRROR", "http://127.0.0.1:9/, http://127.0.0.1:9/other/")
    write_mnist_like(tmp_path / "w")
    with pytest.raises(VaelabError, match="could not download train-images-idx3-ubyte.gz of fakeset") as e:
        read_named(_fake(tmp_path / "w"))
    msg = str(e.value)
    assert "put the files" in msg and "$VAELAB_DATA/fakeset/" in msg and "\n" not in msg
    assert not list((empty_data / "fakeset").iterdir())  # no partial file left


def test_missing_file_on_the_mirror(server, empty_data, monkeypatch):
    root, base, _ = server
    monkeypatch.setenv("VAELAB_MIRROR", base)
    write_mnist_like(root)
    ds = _fake(root)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(VaelabError, match="t10k-labels-idx1-ubyte.gz: HTTP 404"):
        read_named(ds)
    assert (empty_data / "fakeset" / "train-images-idx3-ubyte.gz").is_file()  # the verified files stay


def _emnist_zip(path: Path, n: int = 5) -> Path:
    stored = np.zeros((n, 28, 28), dtype=np.uint8)
    stored[:, 0, :] = 255  # top row as stored: the left column once un-transposed
    parts = path.parent / "parts"
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "test"):
            for kind, arr in (("images-idx3", stored), ("labels-idx1", np.arange(n) % 10)):
                name = f"emnist-digits-{split}-{kind}-ubyte.gz"
                zf.write(write_idx(parts / name, arr), f"gzip/{name}")
    return path


def test_emnist_archive_downloaded_and_unpacked(server, empty_data, monkeypatch):
    root, base, requests = server
    archive = _emnist_zip(root / "gzip.zip")
    monkeypatch.setenv("VAELAB_MIRROR", base)
    ds = dataclasses.replace(emnist_dataset("digits"), md5={"gzip.zip": _md5(archive)})
    out = read_named(ds)
    assert len(out) == 10 and out.images[:, 0, :, 0].eq(255).all()
    assert (empty_data / "emnist" / "emnist-digits-train-images-idx3-ubyte.gz").is_file()
    assert (empty_data / "emnist" / "gzip.zip").is_file() and requests == ["/gzip.zip"]


def test_emnist_archive_in_vaelab_data_needs_no_download(empty_data, tmp_path):
    (tmp_path / "data" / "emnist").mkdir(parents=True)
    _emnist_zip(tmp_path / "data" / "emnist" / "gzip.zip")
    ds = load("emnist-digits", val_fraction=0)  # the default mirror is a closed port: this must not download
    assert ds.split_counts() == {"train": 5, "test": 5} and ds.num_classes == 10
