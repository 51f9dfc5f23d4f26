"""The shipped mini recipe still trains as it did: its first steps, on CPU with one thread, give the
losses and weights recorded before the package was reorganised (tests/data/mini_first_steps.json,
recorded at git 64ae401), bit for bit.  A change to the schedule, the hybrid loss, the draws or the
training loop that alters any of them shows here first; the shipped weights themselves were trained by
this recipe, so they stay reproducible exactly when this test passes."""
import hashlib
import json
from pathlib import Path

import torch

from diffnb.mini import model as mini

RECORD = json.loads((Path(__file__).parent / "data" / "mini_first_steps.json").read_text())


def _weights_sha256(run_dir: Path) -> str:
    state = torch.load(run_dir / "state.pt", weights_only=True)
    h = hashlib.sha256()
    for part in ("unet", "encoder"):
        for key in sorted(state[part]):
            h.update(key.encode())
            h.update(state[part][key].contiguous().numpy().tobytes())
    for tensor in state["ema"]:
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def test_the_shipped_recipe_reproduces_its_first_steps(tmp_path, one_thread):
    steps = RECORD["steps"]
    summary = mini.train_mini(mini.RECIPE, run_dir=tmp_path, progress=False, stop_at=steps, device="cpu")
    assert summary["step"] == steps
    history = torch.load(tmp_path / "state.pt", weights_only=True)["history"]
    assert [list(row) for row in history] == RECORD["history"]          # every (mse, vlb), exactly
    assert _weights_sha256(tmp_path) == RECORD["weights_sha256"]
