"""Download the files of a named IDX dataset into the cache, verified against the published MD5.

Each file is streamed to a temp file in the target folder, its MD5 checked, then renamed into place with
`os.replace`: an interrupted, corrupt or concurrent download never leaves a file under the final name. A
checksum mismatch removes the bad file. ``VAELAB_MIRROR`` (comma-separated base URLs; ``{name}`` becomes the
dataset's folder name, e.g. ``mnist``) replaces the built-in mirrors: an in-house mirror, a ``file://``
folder, or the tests' local HTTP server. Datasets shipped as one archive (EMNIST's 'gzip.zip', kept in the
cache so other splits need no second download) are unpacked member by member the same atomic way.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .. import __version__
from ..errors import VaelabError
from .paths import cache_dir, data_roots
from .sources import IdxDataset, find_idx_file

MIRROR_ENV = "VAELAB_MIRROR"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


class _ChecksumError(Exception):
    """A download whose MD5 differs from the published one (already removed)."""


def mirrors(ds: IdxDataset) -> list[str]:
    """Base URLs to try in order: ``$VAELAB_MIRROR`` if set, else the dataset's own."""
    env = os.environ.get(MIRROR_ENV, "").strip()
    bases = [b.strip() for b in env.split(",") if b.strip()] if env else list(ds.mirrors)
    return [b.replace("{name}", ds.folder) for b in bases]


def fetch_named(ds: IdxDataset) -> Path:
    """Download whatever files of `ds` are missing into ``cache_dir()/<folder>/`` and return that folder."""
    target = cache_dir() / ds.folder
    missing = [f for f in ds.needed_files() if find_idx_file(target, f) is None]
    if not missing:
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VaelabError(
            f"cannot create the cache folder {target}: {e}", "set VAELAB_CACHE to a writable folder"
        ) from None
    if ds.archive:
        archive = _local_archive(ds) or _download(ds, ds.archive, target)
        _extract(archive, missing, target)
    else:
        for fname in missing:
            _download(ds, fname, target)
    return target


def _local_archive(ds: IdxDataset) -> Path | None:
    """The dataset's archive if the user (or an earlier download) already put it in a data root."""
    for root in data_roots():
        path = root / ds.folder / ds.archive
        if path.is_file():
            return path
    return None


@contextmanager
def _atomic(dest: Path) -> Iterator[BinaryIO]:
    """A temp file beside `dest` that becomes `dest` only if the block succeeds; removed otherwise."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _download(ds: IdxDataset, fname: str, target: Path) -> Path:
    """Try each mirror for one file; the first verified copy wins. One clear error if none works."""
    errors = []
    for base in mirrors(ds):
        url = base.rstrip("/") + "/" + fname
        try:
            return _download_one(url, target / fname, ds.md5.get(fname, ""))
        except _ChecksumError as e:
            errors.append(str(e))
        except urllib.error.HTTPError as e:
            errors.append(f"{url}: HTTP {e.code} {e.reason}")
        except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
            errors.append(f"{url}: {getattr(e, 'reason', None) or e}")
    raise VaelabError(
        f"could not download {fname} of {ds.name}: {'; '.join(errors) or 'no mirror is known'}",
        f"put the files ({', '.join([ds.archive] if ds.archive else ds.needed_files())}) under "
        f"$VAELAB_DATA/{ds.folder}/ or {target}/, or set {MIRROR_ENV} to a mirror that has them",
    )


def _download_one(url: str, dest: Path, md5: str) -> Path:
    """Stream `url` to `dest` via a temp file, checking the MD5 (when one is published) before the rename."""
    request = urllib.request.Request(url, headers={"User-Agent": f"vaelab/{__version__}"})
    digest = hashlib.md5(usedforsecurity=False)
    with _atomic(dest) as out, urllib.request.urlopen(request, timeout=_TIMEOUT_S) as resp:
        size = resp.headers.get("Content-Length")
        mb = f" ({int(size) / 1e6:.1f} MB)" if size and size.isdigit() else ""
        print(f"downloading {url}{mb} -> {dest.parent}", file=sys.stderr)
        while chunk := resp.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if md5 and digest.hexdigest() != md5:
            raise _ChecksumError(
                f"{url} has MD5 {digest.hexdigest()}, not the published {md5} (the bad file was removed)"
            )
    return dest


def _extract(archive: Path, names: list[str], target: Path) -> None:
    """Copy the named members (matched by base name: gzip.zip nests them in gzip/) into `target`."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = {Path(n).name: n for n in zf.namelist()}
            absent = [n for n in names if n not in members]
            if absent:
                raise VaelabError(
                    f"{archive} lacks {', '.join(absent)}", "delete the archive so it is downloaded again"
                )
            for name in names:
                with _atomic(target / name) as out, zf.open(members[name]) as src:
                    shutil.copyfileobj(src, out, _CHUNK)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise VaelabError(f"cannot unpack {archive}: {e}", "delete it so it is downloaded again") from None
