"""folder: sources: layouts, image modes, sizes, bad files, and the on-disk decode cache."""

from __future__ import annotations

import shutil
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import needs_data, shared_data
from vaelab.data import load
from vaelab.data.folder import decode_image
from vaelab.errors import VaelabError


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    """Each test gets its own cache, so a cache hit is never an accident of test order."""
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "cache"))


def _img(path, mode="RGB", size=(12, 12), color=(200, 30, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, fmt)
    return path


def _tree(root, layout: dict[str, int], ext=".png", **kw):
    """layout: 'sub/dir' -> number of images written there."""
    for sub, n in layout.items():
        for i in range(n):
            _img(root / sub / f"im{i}{ext}", **kw)
    return root


class _Recorded(warnings.catch_warnings):
    """Record every warning (no once-per-location filtering) to assert that none was raised."""

    def __init__(self):
        super().__init__(record=True)

    def __enter__(self):
        caught = super().__enter__()
        warnings.simplefilter("always")
        return caught


# ---------------------------------------------------------------------------------------------------------
# layouts


def test_class_folders(tmp_path):
    root = _tree(tmp_path / "d", {"dogs": 3, "cats": 2, "cats/nested": 1})
    ds = load(f"folder:{root}", val_fraction=0)
    assert ds.class_names == ["cats", "dogs"] and ds.class_counts() == [3, 3]
    assert ds.shape == (3, 12, 12) and ds.split_counts() == {"train": 6}


@pytest.mark.parametrize(
    "names",
    [
        ("train", "valid", "test"),
        ("Training Data", "Validation Data", "Testing Data"),
        ("TRAINING", "val", "testing"),
    ],
)
def test_split_folders(tmp_path, names):
    tr, va, te = names
    root = _tree(
        tmp_path / "d", {f"{tr}/ants": 3, f"{tr}/bees": 2, f"{va}/ants": 1, f"{va}/bees": 1, f"{te}/bees": 2}
    )
    ds = load(f"folder:{root}")
    assert ds.split_counts() == {"train": 5, "val": 2, "test": 2}
    assert ds.class_names == ["ants", "bees"]
    assert ds.split("test").labels.tolist() == [1, 1]


def test_flat_folder_is_unlabelled(tmp_path):
    root = _tree(tmp_path / "d", {"": 4})
    ds = load(f"folder:{root}", val_fraction=0)
    assert not ds.labelled and len(ds) == 4 and ds.class_names == []


def test_flat_split_folders_are_unlabelled_splits(tmp_path):
    root = _tree(tmp_path / "d", {"train": 3, "test": 2})
    ds = load(f"folder:{root}", val_fraction=0)
    assert not ds.labelled and ds.split_counts() == {"train": 3, "test": 2}


def test_splits_mixing_classes_and_loose_images(tmp_path):
    root = _tree(tmp_path / "d", {"train/a": 2, "test": 2})
    with pytest.raises(VaelabError, match="some splits have class folders, but test has loose images"):
        load(f"folder:{root}")


def test_hidden_macosx_and_non_images_ignored_silently(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2, "b": 2})
    _img(root / "a" / ".hidden.png")
    _img(root / "__MACOSX" / "a" / "._im0.png")
    _img(root / ".git" / "x.png")
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "b" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with _Recorded() as caught:
        ds = load(f"folder:{root}", val_fraction=0)
    assert len(ds) == 4 and ds.class_names == ["a", "b"]
    assert not [str(w.message) for w in caught if str(root) in str(w.message)]


# ---------------------------------------------------------------------------------------------------------
# modes, channels and sizes


def _single(tmp_path, path, **opts):
    return load(f"folder:{path.parent}", val_fraction=0, **opts).images[0]


def test_palette_gif_and_rgba_transparency_over_white(tmp_path):
    _img(tmp_path / "p" / "a.gif", mode="P", color=5)  # the palette entry 5 of the default palette
    pal = Image.new("P", (1, 1), 5).convert("RGB").getpixel((0, 0))
    assert _single(tmp_path, tmp_path / "p" / "a.gif", channels=3)[:, 0, 0].tolist() == list(pal)
    _img(tmp_path / "t" / "a.png", mode="RGBA", color=(255, 0, 0, 0))  # fully transparent red
    assert _single(tmp_path, tmp_path / "t" / "a.png")[:, 0, 0].tolist() == [255, 255, 255]
    _img(tmp_path / "la" / "a.png", mode="LA", color=(0, 128))  # half-transparent black
    assert _single(tmp_path, tmp_path / "la" / "a.png")[:, 0, 0].tolist() == [127]


def test_16bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "s" / "a.png"
    path.parent.mkdir()
    values = np.array([[0, 257 * 100, 65535, 32896]] * 4, dtype=np.uint16)
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    assert _single(tmp_path, path)[0, 0].tolist() == [0, 100, 255, 128]


def test_cmyk_jpeg_and_bilevel(tmp_path):
    _img(tmp_path / "c" / "a.jpg", mode="CMYK", color=(0, 255, 255, 0))  # red
    r, g, b = _single(tmp_path, tmp_path / "c" / "a.jpg")[:, 5, 5].tolist()
    assert r > 200 and g < 60 and b < 60
    _img(tmp_path / "b" / "a.bmp", mode="1", color=1)
    assert _single(tmp_path, tmp_path / "b" / "a.bmp")[:, 0, 0].tolist() == [255]


def test_channels_default_from_headers(tmp_path):
    root = _tree(tmp_path / "g", {"a": 3}, mode="L", color=90)
    assert load(f"folder:{root}").channels == 1
    _img(root / "a" / "colour.png")
    assert load(f"folder:{root}").channels == 3
    assert load(f"folder:{root}", channels=1).channels == 1


def test_same_size_kept_and_cropped_square(tmp_path):
    root = tmp_path / "r"
    root.mkdir()
    img = Image.new("L", (30, 20), 0)
    img.paste(255, (5, 0, 25, 20))  # the centre 20 x 20 is white
    for i in range(2):
        img.save(root / f"{i}.png")
    ds = load(f"folder:{root}", val_fraction=0)
    assert ds.shape == (1, 20, 20) and int(ds.images.min()) == 255


def test_mixed_sizes_default_to_64_with_a_warning(tmp_path):
    root = tmp_path / "m"
    _img(root / "a.png", size=(100, 80))
    _img(root / "b.png", size=(40, 50))
    with pytest.warns(UserWarning, match="2 different sizes, resized to 64 x 64"):
        ds = load(f"folder:{root}", val_fraction=0)
    assert ds.shape == (3, 64, 64)
    assert load(f"folder:{root}", image_size=16, val_fraction=0).shape == (3, 16, 16)


def test_jpeg_draft_decode_matches_full_decode(tmp_path):
    """Decoding a big JPEG at reduced size (Image.draft) must look like decoding it fully, then resizing."""
    yy, xx = np.mgrid[0:480, 0:640]
    arr = np.stack([xx * 255 // 640, yy * 255 // 480, (xx + yy) * 255 // 1120], -1).astype(np.uint8)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr).save(path, quality=95)
    fast = decode_image(path, 32, 3).astype(int)
    with Image.open(path) as im:
        full = im.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR, box=(80, 0, 560, 480))
    assert np.abs(fast - np.asarray(full).transpose(2, 0, 1).astype(int)).mean() < 2.0


def test_exif_orientation_applied(tmp_path):
    img = Image.new("L", (40, 40), 0)
    img.paste(255, (0, 0, 40, 10))  # white band at the top as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the band ends up on the right
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif, quality=95)
    out = decode_image(path, 20, 1)[0]
    assert out[:, -2:].mean() > 200 and out[:, :10].mean() < 30


# ---------------------------------------------------------------------------------------------------------
# bad input


def test_truncated_image_skipped_with_warning_naming_it(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2, "b": 2}, ext=".jpg")
    bad = root / "b" / "broken.jpg"
    data = (root / "b" / "im0.jpg").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    (root / "a" / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        ds = load(f"folder:{root}", val_fraction=0)
    messages = " ".join(str(w.message) for w in caught)
    assert str(bad) in messages and str(root / "a" / "empty.png") in messages
    assert len(ds) == 4 and ds.class_counts() == [2, 2]


def test_nothing_readable_is_an_error(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"garbage")
    with (
        pytest.warns(UserWarning, match="a.jpg"),
        pytest.raises(VaelabError, match=f"no image in {root} could be read"),
    ):
        load(f"folder:{root}")


def test_empty_folder_and_file_instead_of_folder(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("hi")
    with pytest.raises(VaelabError, match="has no image files"):
        load(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(VaelabError, match="is a file, not a folder"):
        load(f"folder:{tmp_path / 'empty' / 'readme.txt'}")


def test_single_image_file_as_bare_path(tmp_path):
    path = _img(tmp_path / "one.png", size=(30, 20))
    ds = load(str(path), image_size=8)
    assert len(ds) == 1 and ds.shape == (3, 8, 8) and not ds.labelled


# ---------------------------------------------------------------------------------------------------------
# cache


def test_second_load_reads_no_image_file(tmp_path, monkeypatch):
    root = _tree(tmp_path / "d", {"a": 5, "b": 5}, ext=".jpg")
    first = load(f"folder:{root}", image_size=8)
    assert "cached in" in first.source

    def refuse(*args, **kwargs):
        raise AssertionError("an image was opened despite the cache")

    monkeypatch.setattr(Image, "open", refuse)
    second = load(f"folder:{root}", image_size=8)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert torch.equal(first.split_ids, second.split_ids) and second.class_names == ["a", "b"]
    assert "read from cache" in second.source
    assert not list((tmp_path / "cache" / "folders").glob("*.tmp"))  # no temp file left behind


def test_cache_keyed_by_files_and_options(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2}, ext=".png")
    assert load(f"folder:{root}", image_size=8, val_fraction=0).images.float().mean() > 0
    assert load(f"folder:{root}", image_size=10, val_fraction=0).shape == (3, 10, 10)  # option in the key
    _img(root / "a" / "im0.png", color=(0, 0, 0))  # same name, new content and mtime
    ds = load(f"folder:{root}", image_size=8, val_fraction=0)
    assert int(ds.images[0].max()) == 0 and "decoded" in ds.source
    assert len([d for d in (tmp_path / "cache" / "folders").iterdir() if d.is_dir()]) == 3


def test_corrupt_cache_is_rebuilt_and_cache_can_be_disabled(tmp_path, monkeypatch):
    root = _tree(tmp_path / "d", {"a": 2}, ext=".png")
    load(f"folder:{root}", image_size=8)
    (cache,) = (tmp_path / "cache" / "folders").iterdir()
    cache_file = cache / "images.u8"
    cache_file.write_bytes(b"half a file")
    assert "decoded" in load(f"folder:{root}", image_size=8).source
    monkeypatch.setenv("VAELAB_NO_CACHE", "1")
    shutil.rmtree(cache)
    assert "decoded" in load(f"folder:{root}", image_size=8).source
    assert not cache.exists()


def test_skipped_file_warning_repeats_on_cache_hit(tmp_path):
    root = _tree(tmp_path / "d", {"a": 2})
    (root / "a" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="bad.png"):
        load(f"folder:{root}", image_size=8)
    with pytest.warns(UserWarning, match="bad.png"):
        assert "read from cache" in load(f"folder:{root}", image_size=8).source


# ---------------------------------------------------------------------------------------------------------
# real photos


@needs_data("hymenoptera")
def test_hymenoptera_at_64_then_from_cache():
    root = shared_data() / "hymenoptera"
    t0 = time.perf_counter()
    ds = load(f"folder:{root}", image_size=64)
    first = time.perf_counter() - t0
    assert ds.shape == (3, 64, 64) and ds.class_names == ["ants", "bees"]
    assert ds.split("train").class_counts() == [124, 121] and ds.split("val").class_counts() == [70, 83]
    t0 = time.perf_counter()
    again = load(f"folder:{root}", image_size=64)
    cached = time.perf_counter() - t0
    assert torch.equal(ds.images, again.images)
    assert cached < first / 5, (first, cached)


def test_concurrent_loads_share_one_intact_cache_file(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    root = _tree(tmp_path / "d", {"a": 6, "b": 6}, ext=".jpg")
    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(lambda _: load(f"folder:{root}", image_size=8, val_fraction=0), range(2))
    assert torch.equal(a.images, b.images)
    files = list((tmp_path / "cache" / "folders").iterdir())
    assert len(files) == 1 and (files[0] / "images.u8").is_file()
    assert "read from cache" in load(f"folder:{root}", image_size=8).source


def test_cli_prints_skipped_files_as_warning_lines(tmp_path, capsys):
    from vaelab.cli import main

    root = _tree(tmp_path / "d", {"a": 2, "b": 1})
    (root / "b" / "bad.png").write_bytes(b"nope")
    with pytest.raises(SystemExit) as e:
        main(["data", "info", f"folder:{root}", "--val-fraction", "0"])
    assert e.value.code == 0
    captured = capsys.readouterr()
    assert f"warning: skipped {root / 'b' / 'bad.png'}: cannot read it" in captured.err
    assert "3 images of 3 x 12 x 12" in captured.out and f"source: {root}" in captured.out
