"""Part B's ``seed`` profile end to end, offline: every Part B notebook through papermill with
``-p profile seed`` and small epoch, image-count, width and batch overrides, on MNIST's raw files already in place.

The files are real MNIST digits (the 5,000 of ``mnist-5k``, 4,000 train / 1,000 test) written under
torchvision's names in ``$DIFFNB_BUILD/data/mnist/MNIST/raw``, where ``data="mnist"`` (the seed profile's)
reads them without a download. The notebooks run in order, as a learner would: B2.3 samples the run
B2.2 trained, B2.6, B2.6a and B2.7 the run of B2.5 (B2.1a, the 2D lab, runs its seed profile on its toy data).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from diffnb import pack
from diffnb.b import digits

# the seed profile (its data source, learning rates and schedules) with 5 epochs over 256 digits, and a
# small width and batch: at the write-up's D = 128 and batch 256 one denoiser step takes about 30 s on
# a busy CPU core. B2.6 samples after epochs 1 and 5.
OVERRIDES = {"profile": "seed", "device": "cpu", "epochs": 5, "train_limit": 256, "num_hiddens": 8,
             "batch_size": 32}


def _can_bind_localhost() -> bool:
    try:
        socket.socket().bind(("127.0.0.1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_bind_localhost(), reason="a Jupyter kernel needs local TCP ports")
def test_every_part_b_notebook_runs_the_seed_profile_on_local_mnist_files(tmp_path):
    build = tmp_path / "build"
    raw = build / "data" / "mnist" / "MNIST" / "raw"
    shutil.copytree(digits.make_mnist_5k(tmp_path / "mnist-5k") / "MNIST" / "raw", raw)
    env = dict(os.environ, DIFFNB_BUILD=str(build), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    notebooks = pack.list_notebooks("B")
    assert [p.name for p in notebooks][:3] == ["B1.1_unet.ipynb", "B1.2_denoiser.ipynb", "B2.1_time_conditioning.ipynb"]
    assert len(notebooks) == len(list(pack.notebook_dir().glob("B*.ipynb")))
    times = {}
    for nb_path in notebooks:
        names = pack.parameter_names(json.loads(nb_path.read_text()))
        params = [x for k, v in OVERRIDES.items() if k in names for x in ("-p", k, str(v))]
        out = tmp_path / nb_path.name
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "papermill", str(nb_path), str(out), "-k", "python3",
                               "--no-progress-bar", *params], env=env, capture_output=True, text=True, timeout=900)
        times[nb_path.name] = time.perf_counter() - start
        assert done.returncode == 0, f"{nb_path.name} failed under the seed profile:\n{done.stderr[-3000:]}"
        text = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"]
                       for o in c.get("outputs", []) if c["cell_type"] == "code")
        assert "profile: seed | device: cpu" in text, f"{nb_path.name} did not run the seed profile"
        if "data" in names:                      # the notebooks on digits (B2.1a's 2D lab reads none)
            assert "MNIST from torchvision (4,000 train images" in text, f"{nb_path.name} did not read the local files"
    assert not (build / "data" / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").exists()  # no download
    print("seconds per notebook:", {k: round(v, 1) for k, v in times.items()})
