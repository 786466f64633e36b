"""Data helpers: data sets, splits, mean-image normalization, minibatches, k-fold indices."""

from __future__ import annotations

import builtins
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn import data

# --------------------------------------------------------------------------- digits


def test_load_digits_shapes_dtypes_and_scale():
    x, y = jaxlearn.load_digits()
    assert x.shape == (1797, 64) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int32
    assert x.min() == 0.0 and x.max() == 1.0
    # Pixels were integers 0..16: x * 16 is integral.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def test_load_digits_without_sklearn_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'jaxlearn\[data\]'"):
        jaxlearn.load_digits()


# --------------------------------------------------------------------------- CIFAR-10


def _write_batch(file, n, seed, protocol=2, override=None):
    rng = np.random.default_rng(seed)
    d = {
        b"batch_label": b"synthetic batch",
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"labels": rng.integers(0, 10, n).tolist(),
        b"filenames": [b"img_%d.png" % i for i in range(n)],
    }
    d.update(override or {})
    with open(file, "wb") as f:
        pickle.dump(d, f, protocol=protocol)
    return d


@pytest.fixture
def cifar_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = {}
    for i in range(1, 6):
        written[f"data_batch_{i}"] = _write_batch(folder / f"data_batch_{i}", 4, seed=i)
    written["test_batch"] = _write_batch(folder / "test_batch", 3, seed=99)
    return folder, written


def test_load_cifar10_reads_the_standard_folder(cifar_dir):
    folder, written = cifar_dir
    c = jaxlearn.load_cifar10(folder)
    assert isinstance(c, jaxlearn.Cifar10)
    assert c.x_train.shape == (20, 32, 32, 3) and c.x_train.dtype == np.float32
    assert c.y_train.shape == (20,) and c.y_train.dtype == np.int32
    assert c.x_test.shape == (3, 32, 32, 3) and c.y_test.shape == (3,)
    # Order: batches 1..5 concatenated; labels kept.
    expected_y = [v for i in range(1, 6) for v in written[f"data_batch_{i}"][b"labels"]]
    assert c.y_train.tolist() == expected_y
    assert c.y_test.tolist() == written["test_batch"][b"labels"]
    # Channel-major rows: the first 1024 bytes are the red plane, row-major 32x32.
    raw = written["data_batch_2"][b"data"][1]
    img = c.x_train[5]
    assert img[0, 0, 0] == raw[0] and img[0, 1, 0] == raw[1] and img[1, 0, 0] == raw[32]
    assert img[0, 0, 1] == raw[1024] and img[0, 0, 2] == raw[2048]
    assert img[31, 31, 2] == raw[3071]
    np.testing.assert_array_equal(img[..., 1].ravel(), raw[1024:2048].astype(np.float32))


def test_load_cifar10_accepts_str_keys_and_other_protocols(tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        rng = np.random.default_rng(0)
        d = {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "labels": [3, 7]}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=pickle.HIGHEST_PROTOCOL)
    c = jaxlearn.load_cifar10(str(folder))
    assert c.y_train.tolist() == [3, 7] * 5


def test_load_cifar10_missing_folder():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        jaxlearn.load_cifar10("/no/such/cifar-10-batches-py")


def test_load_cifar10_missing_files_are_named(cifar_dir):
    folder, _ = cifar_dir
    os.remove(folder / "data_batch_3")
    os.remove(folder / "test_batch")
    with pytest.raises(FileNotFoundError, match="missing data_batch_3, test_batch"):
        jaxlearn.load_cifar10(folder)


@pytest.mark.parametrize(
    "override, match",
    [
        (
            {b"data": np.zeros((4, 3071), np.uint8)},
            r"'data' must be a uint8 array of shape \(N, 3072\)",
        ),
        ({b"data": np.zeros((4, 3072), np.float32)}, "dtype float32"),
        ({b"data": [1, 2, 3]}, "got list"),
        ({b"labels": [1, 2, 3]}, r"'labels' must be 4 integers"),
        ({b"labels": [0, 1, 2, 10]}, r"labels must lie in \[0, 10\), found 10"),
        ({b"labels": [0.5, 1.0, 2.0, 3.0]}, "must be 4 integers"),
    ],
)
def test_load_cifar10_malformed_batch_names_the_file(cifar_dir, override, match):
    folder, _ = cifar_dir
    _write_batch(folder / "data_batch_4", 4, seed=4, override=override)
    with pytest.raises(ValueError, match=match) as e:
        jaxlearn.load_cifar10(folder)
    assert "data_batch_4" in str(e.value)


def test_load_cifar10_missing_key_not_a_dict_truncated_and_garbage(cifar_dir):
    folder, _ = cifar_dir
    file = folder / "test_batch"
    with open(file, "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8)}, f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch has no 'labels' entry"):
        jaxlearn.load_cifar10(folder)
    with open(file, "wb") as f:
        pickle.dump([1, 2], f, protocol=2)
    with pytest.raises(ValueError, match=r"test_batch must hold a dict.*got list"):
        jaxlearn.load_cifar10(folder)
    good = pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, protocol=2)
    file.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="test_batch is not a valid CIFAR-10 batch file"):
        jaxlearn.load_cifar10(folder)
    file.write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="test_batch is not a valid CIFAR-10 batch file"):
        jaxlearn.load_cifar10(folder)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


def test_load_cifar10_refuses_to_run_code_from_a_tampered_file(cifar_dir):
    folder, _ = cifar_dir
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_1.*refusing to load global posix\.getcwd"):
        jaxlearn.load_cifar10(folder)


# --------------------------------------------------------------------------- check_dataset


def test_check_dataset_accepts_good_data_and_names_each_problem():
    x, y = np.zeros((4, 3), np.float32), np.array([0, 1, 2, 1])
    jaxlearn.check_dataset(x, y, num_classes=3)
    with pytest.raises(
        ValueError, match=r"val: labels must lie in \[0, 2\) for 2 classes; found label 2"
    ):
        jaxlearn.check_dataset(x, y, 2, name="val")
    with pytest.raises(ValueError, match="found label -1"):
        jaxlearn.check_dataset(x, np.array([0, -1, 0, 0]))
    with pytest.raises(ValueError, match="same number of examples, got 4 and 3"):
        jaxlearn.check_dataset(x, y[:3])
    with pytest.raises(ValueError, match="empty"):
        jaxlearn.check_dataset(x[:0], y[:0])
    with pytest.raises(ValueError, match="integer class indices, got dtype float64"):
        jaxlearn.check_dataset(x, y.astype(float))
    with pytest.raises(ValueError, match=r"y must have shape \(N,\)"):
        jaxlearn.check_dataset(x, np.eye(4, dtype=int))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite values \\(first in example 2\\)"):
        jaxlearn.check_dataset(bad, y)
    with pytest.raises(ValueError, match="`num_classes` must be an int >= 1, got 0"):
        jaxlearn.check_dataset(x, y, num_classes=0)


# --------------------------------------------------------------------------- splits


def _toy(n=100, c=4):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = (np.arange(n) % c).astype(np.int32)
    return x, y


def test_split_sizes_disjoint_and_covering():
    x, y = _toy(103)
    s = jaxlearn.train_val_test_split(x, y, jax.random.key(1), 0.2, 0.1)
    assert isinstance(s, jaxlearn.Splits)
    sizes = [len(part[1]) for part in s]
    assert sizes == [103 - 21 - 10, 21, 10]
    rows = np.concatenate([part[0][:, 0] for part in s]) / 3
    assert sorted(rows.astype(int).tolist()) == list(range(103))
    # x and y stay paired.
    for px, py in s:
        np.testing.assert_array_equal((px[:, 0] / 3).astype(int) % 4, py)


def test_split_fixed_key_fixed_split_other_key_other_split():
    x, y = _toy()
    a = jaxlearn.train_val_test_split(x, y, jax.random.key(7))
    b = jaxlearn.train_val_test_split(x, y, jax.random.key(7))
    c = jaxlearn.train_val_test_split(x, y, jax.random.key(8))
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa[0], pb[0])
    assert not np.array_equal(a.train[0], c.train[0])
    # Legacy uint32 keys work as well.
    d = jaxlearn.train_val_test_split(x, y, jax.random.PRNGKey(7))
    assert len(d.val[1]) == 10


def test_split_keeps_array_kind():
    x, y = _toy(20)
    s = jaxlearn.train_val_test_split(jnp.asarray(x), jnp.asarray(y), jax.random.key(0))
    assert isinstance(s.train[0], jax.Array) and isinstance(s.test[1], jax.Array)
    s = jaxlearn.train_val_test_split(x, y, jax.random.key(0))
    assert isinstance(s.train[0], np.ndarray)


def test_split_stratified_keeps_class_proportions():
    x = np.arange(200, dtype=np.float32)[:, None]
    y = np.repeat([0, 1], [160, 40]).astype(np.int32)  # 80% / 20%
    s = jaxlearn.train_val_test_split(x, y, jax.random.key(3), 0.1, 0.25, stratify=True)
    assert np.bincount(s.val[1]).tolist() == [16, 4]
    assert np.bincount(s.test[1]).tolist() == [40, 10]
    assert np.bincount(s.train[1]).tolist() == [104, 26]
    # Classes are interleaved, not grouped.
    assert 0 < s.train[1][:20].sum() < 20
    # Still a partition of the examples.
    allx = np.concatenate([p[0][:, 0] for p in s])
    assert sorted(allx.tolist()) == list(range(200))


def test_split_stratified_shares_out_the_plain_sizes_and_keeps_every_class_in_training():
    key = jax.random.key(0)
    y = np.repeat([0, 1, 2, 3], 5)
    x = np.arange(20.0)[:, None]
    s = jaxlearn.train_val_test_split(x, y, key, 0.1, 0.1, stratify=True)
    assert [len(p[1]) for p in s] == [
        16,
        2,
        2,
    ]  # as the plain split; rounding per class gave 20/0/0
    y = np.array([0, 0] + [1] * 8)
    s = jaxlearn.train_val_test_split(x[:10], y, key, 0.3, 0.3, stratify=True)
    assert [len(p[1]) for p in s] == [4, 3, 3] and 0 in s.train[1]
    y = np.array([0.0, 1.0, np.nan, np.nan, 1.0, 0.0])  # NaN labels are kept, as one class
    s = jaxlearn.train_val_test_split(x[:6], y, key, 0.2, 0.0, stratify=True)
    assert sorted(np.concatenate([p[0][:, 0] for p in s]).tolist()) == list(range(6))


def test_split_zero_val_fraction_gives_empty_val():
    x, y = _toy(10)
    s = jaxlearn.train_val_test_split(x, y, jax.random.key(0), 0.0, 0.2)
    assert [len(p[1]) for p in s] == [8, 0, 2]
    assert s.val[0].shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"val_fraction": 1.0}, r"`val_fraction` must be a fraction in \[0, 1\), got 1.0"),
        ({"test_fraction": -0.1}, "`test_fraction` must be a fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1 to leave training data"),
        ({"val_fraction": "0.1"}, "`val_fraction` must be a fraction"),
    ],
)
def test_split_bad_fractions(kwargs, match):
    x, y = _toy(10)
    with pytest.raises(ValueError, match=match):
        jaxlearn.train_val_test_split(x, y, jax.random.key(0), **kwargs)


def test_split_bad_data():
    x, y = _toy(10)
    with pytest.raises(ValueError, match=r"same N, got shapes \(10, 3\) and \(9,\)"):
        jaxlearn.train_val_test_split(x, y[:9], jax.random.key(0))
    with pytest.raises(ValueError, match="empty"):
        jaxlearn.train_val_test_split(x[:0], y[:0], jax.random.key(0))
    with pytest.raises(ValueError, match="no training examples left from 2"):
        jaxlearn.train_val_test_split(x[:2], y[:2], jax.random.key(0), 0.45, 0.45)


def test_subtract_mean_uses_train_statistics_only():
    x, y = _toy(50)
    s = jaxlearn.train_val_test_split(x, y, jax.random.key(0), 0.2, 0.2)
    out, mean = jaxlearn.subtract_mean(s)
    np.testing.assert_allclose(mean, s.train[0].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(out.train[0].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.val[0], s.val[0] - mean, rtol=1e-6)
    np.testing.assert_allclose(out.test[0], s.test[0] - mean, rtol=1e-6)
    # The validation set's own mean is not removed: it differs from the train mean.
    assert not np.allclose(out.val[0].mean(axis=0), 0, atol=1e-2)
    assert out.train[0].dtype == np.float32 and mean.shape == (3,)
    np.testing.assert_array_equal(out.val[1], s.val[1])


def test_subtract_mean_images_and_jax_arrays():
    x = jnp.asarray(np.random.default_rng(0).random((10, 4, 4, 3), dtype=np.float32))
    y = jnp.zeros(10, jnp.int32)
    s = jaxlearn.Splits((x[:6], y[:6]), (x[6:8], y[6:8]), (x[8:], y[8:]))
    out, mean = jaxlearn.subtract_mean(s)
    assert isinstance(mean, jax.Array) and mean.shape == (4, 4, 3)
    np.testing.assert_allclose(out.test[0], x[8:] - x[:6].mean(0), rtol=1e-6)


@pytest.mark.parametrize("xp", [np, jnp])
def test_subtract_mean_centres_raw_uint8_pixels_in_float32(xp):
    # In uint8 the mean 15 would wrap 10 - 15 around to 251.
    y = np.zeros(1, int)
    s = jaxlearn.Splits(
        (xp.asarray([[10], [20]], dtype=xp.uint8), np.zeros(2, int)),
        (xp.asarray([[200]], dtype=xp.uint8), y),
        (xp.asarray([[0]], dtype=xp.uint8), y),
    )
    out, mean = jaxlearn.subtract_mean(s)
    assert mean.dtype == np.float32 and out.train[0].dtype == np.float32
    assert np.asarray(out.train[0]).ravel().tolist() == [-5.0, 5.0]
    assert np.asarray(out.val[0]).ravel().tolist() == [185.0]


def test_subtract_mean_of_float16_images_is_summed_in_float32():
    x = np.random.default_rng(0).integers(0, 256, (1000, 4)).astype(np.float16)
    y = np.zeros(1000, np.int32)
    s = jaxlearn.Splits((x, y), (x[:2], y[:2]), (x[:2], y[:2]))
    for xp in (np, jnp):
        s_xp = jaxlearn.Splits(*[(xp.asarray(a), b) for a, b in s])
        out, mean = jaxlearn.subtract_mean(s_xp)
        assert mean.dtype == np.float16
        np.testing.assert_allclose(np.asarray(mean), x.astype(np.float64).mean(0), rtol=1e-3)
        assert np.isfinite(np.asarray(out.train[0])).all()


def test_subtract_mean_errors():
    with pytest.raises(ValueError, match="must be a Splits"):
        jaxlearn.subtract_mean((np.zeros(3), np.zeros(3)))
    e = (np.zeros((0, 2)), np.zeros(0, int))
    with pytest.raises(ValueError, match="training split is empty"):
        jaxlearn.subtract_mean(jaxlearn.Splits(e, e, e))


# --------------------------------------------------------------------------- batches


def test_batch_indices_is_a_permutation_minus_remainder():
    idx = jaxlearn.batch_indices(jax.random.key(0), 23, 5)
    assert idx.shape == (4, 5) and idx.dtype == jnp.int32
    flat = np.asarray(idx).ravel()
    assert len(set(flat.tolist())) == 20 and flat.min() >= 0 and flat.max() < 23
    exact = jaxlearn.batch_indices(jax.random.key(0), 20, 5)
    assert sorted(np.asarray(exact).ravel().tolist()) == list(range(20))
    assert jaxlearn.batch_indices(jax.random.key(0), 7, 7).shape == (1, 7)


def test_batch_indices_fresh_per_epoch_key_and_jittable():
    f = jax.jit(jaxlearn.batch_indices, static_argnums=(1, 2))
    k = jax.random.key(0)
    e1, e2 = jax.random.split(k)
    a, b = f(e1, 100, 10), f(e2, 100, 10)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(f(e1, 100, 10), jaxlearn.batch_indices(e1, 100, 10))

    # Inside a scan over epochs, each epoch draws its own permutation.
    def epoch(key, _):
        key, sub = jax.random.split(key)
        return key, jaxlearn.batch_indices(sub, 12, 4)

    _, per_epoch = jax.lax.scan(epoch, k, None, length=3)
    assert per_epoch.shape == (3, 3, 4)
    for e in np.asarray(per_epoch):
        assert sorted(e.ravel().tolist()) == list(range(12))
    assert not np.array_equal(per_epoch[0], per_epoch[1])


def test_batch_indices_errors():
    k = jax.random.key(0)
    with pytest.raises(
        ValueError, match=r"`batch_size` \(11\) is larger than the data set \(10 examples\)"
    ):
        jaxlearn.batch_indices(k, 10, 11)
    with pytest.raises(ValueError, match="`num_examples` is 0: the data set is empty"):
        jaxlearn.batch_indices(k, 0, 1)
    with pytest.raises(ValueError, match="`batch_size` must be an int >= 1, got 0"):
        jaxlearn.batch_indices(k, 10, 0)
    with pytest.raises(ValueError, match="`num_examples` must be an int >= 0, got 2.5"):
        jaxlearn.batch_indices(k, 2.5, 1)
    with pytest.raises(ValueError, match="static Python int"):
        jax.jit(jaxlearn.batch_indices)(k, 10, 2)


def test_epoch_batches_gathers_pairs():
    x = jnp.arange(10.0)[:, None] * jnp.ones((1, 2))
    y = jnp.arange(10)
    xb, yb = jax.jit(jaxlearn.epoch_batches, static_argnums=3)(jax.random.key(2), x, y, 3)
    assert xb.shape == (3, 3, 2) and yb.shape == (3, 3)
    np.testing.assert_array_equal(xb[..., 0], yb.astype(jnp.float32))
    with pytest.raises(ValueError, match="larger than the data set"):
        jaxlearn.epoch_batches(jax.random.key(0), x, y, 11)


def test_kfold_indices_partition_and_sizes():
    folds = jaxlearn.kfold_indices(11, 3)
    assert len(folds) == 3
    assert [len(v) for _, v in folds] == [4, 4, 3]
    assert np.concatenate([v for _, v in folds]).tolist() == list(range(11))
    for t, v in folds:
        assert sorted(np.concatenate([t, v]).tolist()) == list(range(11))
        assert not set(t.tolist()) & set(v.tolist())


def test_kfold_indices_shuffled_with_key():
    a = jaxlearn.kfold_indices(20, 5, jax.random.key(0))
    b = jaxlearn.kfold_indices(20, 5, jax.random.key(0))
    for (_, va), (_, vb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(va, vb)
    vals = np.concatenate([v for _, v in a])
    assert sorted(vals.tolist()) == list(range(20)) and vals.tolist() != list(range(20))


def test_kfold_indices_errors():
    with pytest.raises(
        ValueError, match=r"`k` \(5\) folds need at least 5 examples, got num_examples=3"
    ):
        jaxlearn.kfold_indices(3, 5)
    with pytest.raises(ValueError, match="`k` must be an int >= 2, got 1"):
        jaxlearn.kfold_indices(10, 1)


def test_data_all_is_exported():
    for name in data.__all__:
        assert getattr(jaxlearn, name) is getattr(data, name)


def test_split_fractions_may_be_numpy_floats():
    x, y = np.zeros((10, 2)), np.zeros(10, int)
    s = jaxlearn.train_val_test_split(x, y, jax.random.key(0), val_fraction=np.float32(0.2))
    assert s.val[0].shape == (2, 2)
    with pytest.raises(ValueError, match="must be a fraction in"):
        jaxlearn.train_val_test_split(x, y, jax.random.key(0), val_fraction=np.bool_(True))
