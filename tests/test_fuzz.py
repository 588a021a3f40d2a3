"""Parsers survive fuzzing: random bytes, random arrays and random strings give a result or a VaelabError,
never another exception and never a hang (hypothesis, with a deadline per example).

Covered: the IDX parser and `idx:` folders, checkpoints and run directories, the ``key=value`` override
parser and YAML config files, and (when their readers are in this branch) npz/npy files and image folders.
"""

from __future__ import annotations

import io
import shutil
import string
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from vaelab.config import Config, all_keys, apply_overrides, load_config, parse_override
from vaelab.data import ImageSet, load
from vaelab.errors import VaelabError

FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),  # a hang fails the example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=False,
)


@pytest.fixture(scope="module")
def scratch():
    folder = Path(tempfile.mkdtemp(prefix="vaelab-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def fresh(scratch: Path) -> Path:
    folder = Path(tempfile.mkdtemp(dir=scratch))
    return folder


def outcome(fn, *args, **kwargs):
    """Call `fn`; a VaelabError is a fine outcome (returned), anything else propagates and fails the test."""
    try:
        return fn(*args, **kwargs)
    except VaelabError as e:
        assert str(e).strip() and "\n" not in str(e)  # still one line
        return e


def check_imageset(ds) -> None:
    if isinstance(ds, ImageSet):
        assert ds.images.dtype == torch.uint8 and ds.images.ndim == 4
        if ds.labels is not None:
            assert ds.labels.shape == (len(ds),) and (len(ds) == 0 or int(ds.labels.min()) >= 0)


# ---------------------------------------------------------------------------------------------------------
# IDX


def idx_header(dtype_code: int, dims: list[int]) -> bytes:
    return bytes([0, 0, dtype_code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


@FUZZ
@given(data=st.binary(max_size=300))
def test_idx_parser_random_bytes(scratch, data):
    from vaelab.data.sources import read_idx

    path = fresh(scratch) / "x-idx3-ubyte"
    path.write_bytes(data)
    out = outcome(read_idx, path)
    assert isinstance(out, (VaelabError, np.ndarray))


@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07, 0xFF]),
    dims=st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), max_size=6),
    body=st.binary(max_size=400),
    gz=st.booleans(),
)
def test_idx_parser_forged_headers(scratch, code, dims, body, gz):
    """Plausible headers with any dimensions (huge ones too) over a short body: no overflow, no giant alloc."""
    import gzip

    from vaelab.data.sources import read_idx

    raw = idx_header(code, dims) + body
    path = fresh(scratch) / "x-idx3-ubyte"
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = outcome(read_idx, path)
    if isinstance(out, np.ndarray):
        assert list(out.shape) == dims


@FUZZ
@given(
    n=st.integers(0, 5),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=4),
    labels=st.lists(st.integers(0, 255), max_size=7),
    label_code=st.sampled_from([0x08, 0x09, 0x0D]),
)
def test_idx_folder_any_pairing(scratch, n, shape, labels, label_code):
    """An `idx:` folder whose images and labels disagree in every way: a data set or one error."""
    folder = fresh(scratch)
    dims = [n, *shape]
    count = int(np.prod(dims)) if dims else 0
    (folder / "train-images-idx3-ubyte").write_bytes(idx_header(0x08, dims) + bytes(count))
    lab = np.array(labels, dtype=np.uint8)
    lab = {0x08: lab, 0x09: lab.view(np.int8), 0x0D: lab.astype(">f4")}[label_code]  # bytes, signed, floats
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_header(label_code, [len(lab)]) + lab.tobytes())
    check_imageset(outcome(load, f"idx:{folder}"))


# ---------------------------------------------------------------------------------------------------------
# checkpoints and runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory as training leaves it (config.yaml + checkpoints of a tiny model), made without training."""
    from vaelab.config import save_config, to_dict
    from vaelab.models import build
    from vaelab.train.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("fuzz-run")
    cfg = load_config(None, ["model.hidden=[4]", "model.latent_dim=2"])
    cfg.model.image_size, cfg.model.channels, cfg.model.num_classes = 8, 1, 3
    save_config(cfg, run / "config.yaml")
    state = {"model": build(cfg.model).state_dict(), "config": to_dict(cfg), "epoch": 1, "step": 4}
    for name in ("last", "best"):
        save_checkpoint(run / "checkpoints" / f"{name}.ckpt", state)
    return run


@FUZZ
@given(data=st.binary(max_size=2000))
def test_checkpoint_loader_random_bytes(scratch, data):
    from vaelab.train.checkpoint import load_checkpoint

    path = fresh(scratch) / "x.ckpt"
    path.write_bytes(data)
    assert isinstance(outcome(load_checkpoint, path), VaelabError)


@settings(FUZZ, max_examples=60)
@given(cuts=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4), truncate=st.floats(0.05, 1))
def test_damaged_checkpoint_in_a_run(scratch, trained, cuts, truncate):
    """Flip bytes of a real checkpoint and truncate it: load_run gives a run or one clear error."""
    from vaelab.run import load_run

    run = fresh(scratch) / "run"
    shutil.copytree(trained, run)
    data = bytearray((run / "checkpoints" / "best.ckpt").read_bytes())
    for where, value in cuts:
        data[int(where * (len(data) - 1))] = value
    data = data[: max(1, int(len(data) * truncate))]
    (run / "checkpoints" / "best.ckpt").write_bytes(bytes(data))
    out = outcome(load_run, run)
    assert isinstance(out, VaelabError) or out.model is not None


@settings(FUZZ, max_examples=40)
@given(state=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5),
              st.just(torch.zeros(2))),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
), keep=st.sets(st.sampled_from(["format", "model", "config"])))
def test_checkpoint_with_any_plain_contents(scratch, state, keep):
    """A weights-only-loadable file with any structure (wrong format, config, weights) is a run or one error."""
    from vaelab.run import model_from_checkpoint
    from vaelab.train.checkpoint import FORMAT, load_checkpoint

    base = {"format": FORMAT, "model": {"w": torch.zeros(1)}, "config": {"model": {"image_size": 8, "channels": 1}}}
    if isinstance(state, dict):
        state = {**{k: v for k, v in base.items() if k in keep}, **state}
    path = fresh(scratch) / "x.ckpt"
    buf = io.BytesIO()
    torch.save(state, buf)
    path.write_bytes(buf.getvalue())
    loaded = outcome(load_checkpoint, path)
    if isinstance(loaded, dict):
        outcome(model_from_checkpoint, loaded, path)


# ---------------------------------------------------------------------------------------------------------
# overrides and config files

KEYS = all_keys()
VALUES = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "[", "]", "[1,", "{a: 1}", "!!python/object:os.system", "&a [*a]", "1e400", "-.inf", ".nan",
                     "0x1F", "~", "null", "[[1]]", "1,2,,3", "true", "'quoted'", '"', "a: b: c", "*ref", "%YAML"]),
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@FUZZ
@given(text=st.text(max_size=60))
def test_override_parser_random_strings(text):
    out = outcome(parse_override, text)
    assert isinstance(out, VaelabError) or (isinstance(out, tuple) and isinstance(out[0], str))


@FUZZ
@given(pairs=st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(string.ascii_letters + "._", max_size=20)),
                                VALUES), max_size=5))
def test_overrides_random_values_for_real_keys(pairs):
    """Valid and invalid keys with hostile values: a validated Config or one error."""
    overrides = [f"{k}={v}" for k, v in pairs]
    out = outcome(load_config, None, overrides)
    assert isinstance(out, (VaelabError, Config))
    if isinstance(out, Config):
        outcome(apply_overrides, {}, overrides)


@FUZZ
@given(text=st.one_of(
    st.text(max_size=200),
    st.lists(st.tuples(st.sampled_from(["name", "data", "model", "train", "trainer", "modle", "  latent_dim", "  lr"]),
                       VALUES), max_size=6).map(lambda kv: "\n".join(f"{k}: {v}" for k, v in kv)),
))
def test_config_files_random_yaml(scratch, text):
    path = fresh(scratch) / "c.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates make invalid UTF-8 too
    out = outcome(load_config, path)
    assert isinstance(out, (VaelabError, Config))


def test_deeply_nested_yaml_is_one_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 1500 + "]" * 1500)
    assert isinstance(outcome(load_config, path), VaelabError)


# ---------------------------------------------------------------------------------------------------------
# npz / npy and images (readers from the data branch)


def needs_reader(kind: str):
    from vaelab.data import sources

    if kind not in sources.READERS:
        pytest.skip(f"the {kind} reader is not in this branch yet")


ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.int8, np.int16, np.int64, np.float16, np.float32, np.float64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
)


@FUZZ
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".npz", ".npy"]))
def test_npz_npy_random_bytes(scratch, data, suffix):
    kind = suffix[1:]
    needs_reader(kind)
    path = fresh(scratch) / f"x{suffix}"
    path.write_bytes(data)
    check_imageset(outcome(load, f"{kind}:{path}"))


@FUZZ
@given(arrays=st.dictionaries(st.sampled_from(["x", "y", "images", "labels", "data", "targets", "other"]), ARRAYS,
                              max_size=3))
def test_npz_random_arrays(scratch, arrays):
    needs_reader("npz")
    path = fresh(scratch) / "x.npz"
    np.savez(path, **arrays)
    check_imageset(outcome(load, f"npz:{path}"))


@FUZZ
@given(array=ARRAYS)
def test_npy_random_array(scratch, array):
    needs_reader("npy")
    path = fresh(scratch) / "x.npy"
    np.save(path, array)
    check_imageset(outcome(load, f"npy:{path}"))


@FUZZ
@given(data=st.binary(max_size=400), name=st.sampled_from(["a.png", "b.jpg", "c.jpeg", "d.bmp", "e.gif"]),
       prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"GIF89a"]))
def test_image_folder_random_bytes(scratch, data, name, prefix):
    needs_reader("folder")
    folder = fresh(scratch)
    (folder / name).write_bytes(prefix + data)
    check_imageset(outcome(load, f"folder:{folder}", image_size=8))


@settings(FUZZ, max_examples=60)
@given(images=st.lists(st.tuples(st.sampled_from(["L", "LA", "RGB", "RGBA", "P", "I;16", "1", "CMYK"]),
                                 st.integers(1, 12), st.integers(1, 12), st.sampled_from(["png", "jpg", "bmp", "gif"])),
                       min_size=1, max_size=4))
def test_image_folder_any_mode_and_size(scratch, images):
    """Real image files in any mode and size load at image_size (or give one error for a mode a format lacks)."""
    from PIL import Image

    needs_reader("folder")
    folder = fresh(scratch)
    written = 0
    for i, (mode, w, h, fmt) in enumerate(images):
        try:
            Image.new(mode, (w, h)).save(folder / f"{i}.{fmt}")
            written += 1
        except (OSError, ValueError, KeyError):
            continue  # this format cannot store this mode
    assume(written > 0)
    ds = outcome(load, f"folder:{folder}", image_size=8, channels=3, val_fraction=0.0)
    check_imageset(ds)
    assert isinstance(ds, ImageSet) and len(ds) == written and ds.shape == (3, 8, 8)
