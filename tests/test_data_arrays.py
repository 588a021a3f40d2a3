"""npz:/npy: sources: layouts, pixel types, key names, Keras splits, relabelling and the refusals."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from vaelab.data import concat, load
from vaelab.errors import VaelabError

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (6, 8, 8), dtype=np.uint8)  # N x H x W
RGB = RNG.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)  # N x H x W x C
LABELS = np.array([0, 1, 2, 0, 1, 2])


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("images", "expect"),
    [
        (GRAY, GRAY[:, None]),
        (GRAY[..., None], GRAY[:, None]),  # N x H x W x 1
        (RGB, RGB.transpose(0, 3, 1, 2)),  # N x H x W x C
        (RGB.transpose(0, 3, 1, 2), RGB.transpose(0, 3, 1, 2)),  # N x C x H x W
        (np.concatenate([RGB, np.full((6, 8, 8, 1), 255, np.uint8)], -1), RGB.transpose(0, 3, 1, 2)),  # RGBA
        (GRAY.reshape(6, 64), GRAY[:, None]),  # flattened, side inferred
        (RGB.reshape(6, -1), RGB.transpose(0, 3, 1, 2)),  # flattened H x W x C, 3 * 8 * 8
    ],
    ids=["NHW", "NHW1", "NHWC", "NCHW", "RGBA", "flat-gray", "flat-rgb"],
)
def test_layouts(tmp_path, images, expect):
    ds = load(f"npz:{_npz(tmp_path, x=images, y=LABELS)}", val_fraction=0)
    assert ds.images.shape == expect.shape
    np.testing.assert_array_equal(ds.images.numpy(), expect)
    assert ds.labels.tolist() == LABELS.tolist()


def test_flattened_needs_image_size_when_not_square(tmp_path):
    flat = RNG.integers(0, 256, (4, 2 * 10 * 10), dtype=np.uint8)  # 200: neither s*s nor 3*s*s
    with pytest.raises(VaelabError, match="flattened rows of 200 values.*set image_size"):
        load(f"npz:{_npz(tmp_path, x=flat)}")
    flat = RNG.integers(0, 256, (4, 4 * 10 * 10), dtype=np.uint8)  # 400 = 20*20, or RGBA 10x10 when told
    assert load(f"npz:{_npz(tmp_path, x=flat)}").shape == (1, 20, 20)
    assert load(f"npz:{_npz(tmp_path, x=flat)}", image_size=10).shape == (3, 10, 10)


@pytest.mark.parametrize(
    ("values", "expect"),
    [
        (np.array([[0.0, 0.5, 1.0]]), [0, 128, 255]),  # 0..1 -> x255, rounded
        (np.array([[0.0, 127.6, 255.0]], np.float32), [0, 128, 255]),  # 0..255 floats
        (np.array([[0, 7, 255]], np.int64), [0, 7, 255]),
        (np.array([[False, True, True]]), [0, 255, 255]),
    ],
)
def test_pixel_types(tmp_path, values, expect):
    images = np.repeat(values[:, None, :], 3, axis=1)  # 1 x 3 x 3
    ds = load(f"npz:{_npz(tmp_path, images=images)}", val_fraction=0)
    assert ds.images.dtype == torch.uint8 and ds.images[0, 0, 0].tolist() == expect


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.array([[[0.0, np.nan]]]), "NaN or infinite"),
        (np.array([[[0.0, np.inf]]]), "NaN or infinite"),
        (np.array([[[-1.0, 1.0]]]), "from -1 to 1, outside 0..1 and 0..255"),
        (np.array([[[0, 300]]], np.int32), "integer pixels from 0 to 300"),
        (np.array([["a", "b"]]), "not pixels"),
    ],
)
def test_bad_pixels_are_one_line_errors(tmp_path, bad, match):
    path = _npz(tmp_path, x=bad)
    with pytest.raises(VaelabError, match=match) as e:
        load(f"npz:{path}")
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    ("xk", "yk"), [("X", "Y"), ("images", "labels"), ("data", "targets"), ("arr_0", "arr_1")]
)
def test_common_key_names(tmp_path, xk, yk):
    ds = load(f"npz:{_npz(tmp_path, **{xk: GRAY, yk: LABELS})}", val_fraction=0)
    assert len(ds) == 6 and ds.labels.tolist() == LABELS.tolist()


def test_named_keys(tmp_path):
    path = _npz(tmp_path, pics=GRAY, kind=LABELS, other=np.zeros(3))
    ds = load(f"npz:{path}", images_key="pics", labels_key="KIND", val_fraction=0)
    assert ds.labels.tolist() == LABELS.tolist()
    with pytest.raises(VaelabError, match="has no array 'nope'.*pics, kind, other"):
        load(f"npz:{path}", images_key="nope")


def test_unrecognised_keys(tmp_path):
    path = _npz(tmp_path, foo=GRAY, bar=LABELS)
    with pytest.raises(VaelabError, match="no recognisable image array.*foo, bar.*images_key") as e:
        load(f"npz:{path}")
    assert str(path) in str(e.value)


def test_keras_style_splits(tmp_path):
    path = _npz(tmp_path, x_train=GRAY, y_train=LABELS, x_test=GRAY[:2], y_test=LABELS[:2])
    ds = load(f"npz:{path}", val_fraction=0)
    assert ds.split_counts() == {"train": 6, "test": 2}
    assert ds.split("test").labels.tolist() == [0, 1]


def test_labels_not_0_to_k_are_named_by_value_and_relabelled(tmp_path):
    labels = np.array([1, 4, 8, 8, 4, 1])
    ds = load(f"npz:{_npz(tmp_path, x=GRAY, y=labels)}", val_fraction=0)
    assert ds.class_names == ["1", "4", "8"] and ds.labels.tolist() == [0, 1, 2, 2, 1, 0]
    kept = load(f"npz:{_npz(tmp_path, x=GRAY, y=labels)}", classes=["8", "1"], val_fraction=0)
    assert kept.class_names == ["8", "1"] and kept.labels.tolist() == [1, 0, 0, 1]


def test_separate_files_align_by_class_name(tmp_path):
    a = load(f"npz:{_npz(tmp_path, 'a.npz', x=GRAY[:3], y=np.array([1, 4, 8]))}", val_fraction=0)
    b = load(f"npz:{_npz(tmp_path, 'b.npz', x=GRAY[:2], y=np.array([8, 9]))}", split="test")
    both = concat([a, b])
    assert both.class_names == ["1", "4", "8", "9"]
    assert [both.class_names[i] for i in both.labels] == ["1", "4", "8", "8", "9"]


def test_one_hot_float_and_string_labels(tmp_path):
    one_hot = np.eye(3)[LABELS]
    assert load(f"npz:{_npz(tmp_path, x=GRAY, y=one_hot)}", val_fraction=0).labels.tolist() == LABELS.tolist()
    ds = load(f"npz:{_npz(tmp_path, x=GRAY, y=LABELS.astype(float) + 1)}", val_fraction=0)
    assert ds.class_names == ["1", "2", "3"]
    names = np.array(["cat", "dog", "ant", "cat", "dog", "ant"])
    ds = load(f"npz:{_npz(tmp_path, x=GRAY, y=names)}", val_fraction=0)
    assert ds.class_names == ["ant", "cat", "dog"] and ds.labels.tolist() == [1, 2, 0, 1, 2, 0]


def test_saved_class_names_are_used(tmp_path):
    path = _npz(tmp_path, x=GRAY, y=LABELS, class_names=np.array(["zero", "one", "two"]))
    assert load(f"npz:{path}").class_names == ["zero", "one", "two"]


def test_labels_of_wrong_length(tmp_path):
    path = _npz(tmp_path, x=GRAY, y=LABELS[:5])
    with pytest.raises(VaelabError, match="5 labels for 6 images") as e:
        load(f"npz:{path}")
    assert str(path) in str(e.value)


def test_npy_with_sibling_labels(tmp_path):
    np.save(tmp_path / "X_train.npy", RGB)
    np.save(tmp_path / "y_train.npy", LABELS + 5)
    ds = load(f"npy:{tmp_path / 'X_train.npy'}", val_fraction=0)
    assert ds.shape == (3, 8, 8) and ds.class_names == ["5", "6", "7"]
    np.save(tmp_path / "pixels.npy", GRAY)
    np.save(tmp_path / "my labels.npy", LABELS)
    assert load(f"npy:{tmp_path / 'pixels.npy'}").labels is None
    assert load(f"npy:{tmp_path / 'pixels.npy'}", labels_key="my labels.npy").num_classes == 3


def test_pickles_are_never_loaded(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "raw.npy").write_bytes(pickle.dumps({"x": GRAY}))
    np.savez(tmp_path / "obj.npz", x=np.array([GRAY, None], dtype=object))
    for spec in (
        "npy:" + str(tmp_path / "obj.npy"),
        "npy:" + str(tmp_path / "raw.npy"),
        "npz:" + str(tmp_path / "obj.npz"),
    ):
        with pytest.raises(VaelabError, match="holds pickled Python objects, which vaelab never loads"):
            load(spec)


def test_npy_given_to_npz_and_corrupt_archive(tmp_path):
    np.save(tmp_path / "a.npy", GRAY)
    with pytest.raises(VaelabError, match="single .npy array.*use npy:"):
        load(f"npz:{tmp_path / 'a.npy'}")
    good = _npz(tmp_path, x=GRAY)
    with pytest.raises(VaelabError, match="is an .npz archive.*use npz:"):
        load(f"npy:{good}")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(VaelabError, match=f"cannot read {cut}"):
        load(f"npz:{cut}")
