"""The section figures: the scoring functions on inputs whose answer is known, and the command line."""
import json

import pytest
import torch

from diffnb import evaluate
from diffnb.mini.judge import get_world_judge
from diffnb.b.judge import Reading


@pytest.fixture(scope="module")
def judge():
    return get_world_judge(device="cpu")


@pytest.fixture(scope="module")
def renders():
    return evaluate.world_images(20)


def test_far_view_keeps_flat_images_and_removes_fine_detail():
    flat = torch.full((1, 3, 32, 32), 0.3)
    torch.testing.assert_close(evaluate.far_view(flat), flat)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0     # +-1, period 2
    far = evaluate.far_view(checker.expand(1, 3, 32, 32))
    assert far.abs().max() < 1e-6                                                      # 4x4 means are 0


def test_sdedit_scores_an_untouched_input_and_pure_noise(judge, renders):
    x0, digits, _ = renders
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    rows = evaluate.score_sdedit(judge, [x0, noise], x0, digits, [20, 1], list(range(990, -1, -30)))
    same, lost = rows
    assert same["distance"] == 0 and same["digit_kept"] >= 0.9 and same["t"] == 390
    assert lost["distance"] > 0.3 and lost["digit_kept"] <= 0.2 and lost["t"] == 960


def test_inpaint_score_checks_every_kept_pixel(judge, renders):
    x0, digits, _ = renders
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :] = 1
    result = torch.where(mask.bool(), torch.zeros_like(x0), x0)
    assert evaluate.score_inpaint(judge, result, x0, mask, digits)["unmasked_exact"] is True
    result[3, 1, 20, 5] += 0.01                                                        # one kept pixel off
    assert evaluate.score_inpaint(judge, result, x0, mask, digits)["unmasked_exact"] is False


class _DetailJudge:
    """Reads 0 in an image with pixel-scale detail and 1 in a smooth one (what ``predict`` returns)."""

    def predict(self, x):
        detail = (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(1)
        digit = (detail < 0.1).long()
        return Reading(digit, None, torch.zeros_like(digit), None)


def test_hybrid_score_reads_the_far_view_and_the_full_image():
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
    images = torch.stack([checker.expand(3, 32, 32), torch.full((3, 32, 32), 0.2)])   # detail, smooth
    r = evaluate.score_hybrid(_DetailJudge(), images, 1, 0)      # far: smooth (1); near: detail (0)
    assert r["ok"].tolist() == [True, False]                     # only the checkerboard is both
    assert (r["far"], r["near"], r["success"]) == (1.0, 0.5, 0.5)
    swapped = evaluate.score_hybrid(_DetailJudge(), images, 0, 1)
    assert swapped["success"] == 0 and swapped["far"] == 0 and swapped["near"] == 0.5


def test_prompts_without_a_digit_cannot_be_judged():
    with pytest.raises(ValueError, match="must name digits"):
        evaluate.anagram_score(None, None, None, "a photo", "a photo of the digit 3", 2, [990, 0], 7.0, 0)
    with pytest.raises(ValueError, match="must name digits"):
        evaluate.hybrid_score(None, None, None, "a photo of the digit 3", "a pencil sketch", 2, [990, 0], 7.0, 0)


def test_the_command_line_writes_the_figures(tmp_path, one_thread):
    out = tmp_path / "figures.json"
    assert evaluate.main(["--n", "2", "--sections", "1.7.2,1.7.3", "--device", "cpu", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    inpaint, from_photos, from_sketches = figures
    assert inpaint.startswith("1.7.2") and figures[inpaint]["unmasked_exact"] is True
    assert 0 <= figures[inpaint]["digit_kept"] <= 1
    assert from_photos.startswith("1.7.3 photo") and from_sketches.startswith("1.7.3 pencil sketch")
    assert [r["i_start"] for r in figures[from_sketches]] == [1, 3, 5, 7, 10, 20]
    assert all(r["both"] <= min(r["crayon"], r["digit_kept"]) for r in figures[from_sketches])
