"""The lessons beyond sections 1.8-1.9 (A1.9a more views, A1.9b factorized diffusion): the judge's reading
through any number of views (``evaluate.read_views``, ``evaluate.views_baseline``), the explorers that turn an
illusion through its views, put a jigsaw together and blur a motion hybrid, and the notebooks' parameters.

The reading is tested with a judge that reads one pixel (the digit from channel 0's top-left pixel, the style
from channel 1's), so where each view moves that pixel decides, in closed form, what is read."""
from types import SimpleNamespace

import matplotlib
import pytest
import torch

from diffnb import evaluate, profiles
from diffnb.a import decompositions, explorers, views
from diffnb.a.images import to_display

matplotlib.use("Agg")


class PixelJudge:
    """digit = round(10 * top-left pixel of channel 0), style = round(2 * top-left pixel of channel 1), in [0, 1]."""

    def predict(self, images):
        return SimpleNamespace(digit=(images[:, 0, 0, 0] * 10).round().long(),
                               style=(images[:, 1, 0, 0] * 2).round().long())


def _marked(corners: dict, n: int = 1, size: int = 8) -> torch.Tensor:
    """``n`` images in [-1, 1], mid-grey, with channel-0 pixel (r, c) showing digit d for each ``(r, c): d``."""
    x = torch.zeros(n, 3, size, size)
    for (r, c), d in corners.items():
        x[:, 0, r, c] = d / 10 * 2 - 1                  # [0, 1] value d / 10 in model units
    return x


P = "a photo of the digit {}"


def test_read_views_reads_each_view_where_it_moves_the_pixel():
    # upright: the top-left pixel (3); turned 180 degrees: the bottom-right one comes to the top left (5)
    x = torch.cat([_marked({(0, 0): 3, (7, 7): 5}, 3), _marked({(0, 0): 3, (7, 7): 6})])
    r = evaluate.read_views(PixelJudge(), x, [views.IdentityView(), views.FlipView()], [P.format(3), P.format(5)])
    assert r["success"] == pytest.approx(0.75)
    assert r["per_view"] == pytest.approx([1.0, 0.75])
    assert r["ok"].tolist() == [True, True, True, False]
    assert r["read"]["digit"][1].tolist() == [5, 5, 5, 6]


def test_read_views_takes_three_quarter_turns_and_plain_callables():
    # a clockwise quarter turn brings the bottom-left pixel to the top left; counter-clockwise the top-right one
    x = _marked({(0, 0): 1, (7, 0): 4, (0, 7): 7}, 2)
    turns = [views.IdentityView(), views.Rotate90CWView(), views.Rotate90CCWView()]
    r = evaluate.read_views(PixelJudge(), x, turns, [P.format(d) for d in (1, 4, 7)])
    assert r["success"] == 1.0
    wrong = evaluate.read_views(PixelJudge(), x, turns, [P.format(d) for d in (1, 7, 4)])   # the turns swapped
    assert wrong["success"] == 0.0 and wrong["per_view"] == [1.0, 0.0, 0.0]
    by_hand = evaluate.read_views(PixelJudge(), x, [lambda y: y, lambda y: torch.rot90(y, -1, dims=(-2, -1))],
                                  [P.format(1), P.format(4)])
    assert by_hand["success"] == 1.0


def test_read_views_checks_style_where_asked():
    x = _marked({(0, 0): 2}, 2)
    x[0, 1, 0, 0] = 1.0                                 # channel 1 at 1.0 -> [0, 1] value 1 -> style 2 (pencil sketch)
    x[1, 1, 0, 0] = -1.0                                # -> style 0 (photo)
    r = evaluate.read_views(PixelJudge(), x, [views.IdentityView(), views.IdentityView()],
                            ["a pencil sketch of the digit 2", "a photo"], read=["digit", "style"])
    assert r["per_view"] == [1.0, 0.5] and r["ok"].tolist() == [False, True]
    both = evaluate.read_views(PixelJudge(), x, [views.IdentityView()], ["a pencil sketch of the digit 2"], read="both")
    assert both["ok"].tolist() == [True, False]


@pytest.mark.parametrize("kwargs, words", [
    (dict(views=[views.IdentityView()], prompts=[P.format(1), P.format(2)]), "one prompt per view"),
    (dict(views=[views.IdentityView()], prompts=["a photo"]), "names no digit"),
    (dict(views=[views.IdentityView()], prompts=[P.format(1)], read="colour"), "read must be one of"),
    (dict(views=[views.IdentityView()], prompts=[P.format(1)], read=["digit", "style"]), "one per view"),
])
def test_read_views_refuses_what_it_cannot_read(kwargs, words):
    with pytest.raises(ValueError, match=words):
        evaluate.read_views(PixelJudge(), _marked({(0, 0): 1}), **kwargs)


def test_views_baseline_reads_the_samples_it_is_given():
    plain = torch.cat([_marked({(0, 0): 3, (7, 7): 5}), _marked({(0, 0): 3, (7, 7): 3}, 3)])
    share = evaluate.views_baseline(None, None, PixelJudge(), [views.IdentityView(), views.FlipView()],
                                    [P.format(3), P.format(5)], 4, [0], 7.0, 0, samples=plain)
    assert share == pytest.approx(0.25)
    with pytest.raises(ValueError, match="sample must index prompts"):
        evaluate.views_baseline(None, None, PixelJudge(), [views.IdentityView()], [P.format(3)], 4, [0], 7.0, 0,
                                sample=1, samples=plain)


# --------------------------------------------------------------------------- explorers

def _images(n=2, size=32):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("pieces", [2, 4])
def test_jigsaw_frame_goes_from_the_scrambled_view_to_the_image_exactly(pieces):
    x, jigsaw = _images(), views.JigsawView(32, pieces=pieces, seed=3)
    assert torch.equal(explorers.jigsaw_frame(x, jigsaw, 0.0), jigsaw.view(x))
    assert torch.equal(explorers.jigsaw_frame(x, jigsaw, 1.0), x)
    half = explorers.jigsaw_frame(x, jigsaw, 0.5)
    assert half.shape == x.shape and not torch.equal(half, x) and torch.isfinite(half).all()
    with pytest.raises(ValueError, match=r"f must be in \[0, 1\]"):
        explorers.jigsaw_frame(x, jigsaw, 1.5)


def test_explore_jigsaw_starts_scrambled_and_ends_solved():
    x, jigsaw = _images(), views.JigsawView(32)
    e = explorers.explore_jigsaw(x, jigsaw, steps=4, prompts=[P.format(4), P.format(7)])
    assert list(e.controls["step"]) == [0, 1, 2, 3, 4]
    assert torch.equal(e.frame(step=0).images, to_display(jigsaw.view(x)))
    assert torch.equal(e.frame(step=4).images, to_display(x))
    assert "scrambled" in e.frame(step=0).caption and P.format(7) in e.frame(step=0).caption
    assert "solved" in e.frame(step=4).caption and P.format(4) in e.frame(step=4).caption
    assert e.static == [{"step": 0}, {"step": 2}, {"step": 4}]


def test_explore_views_shows_each_view_of_the_illusion():
    x = _images()
    turns = [views.IdentityView(), views.Rotate90CWView(), views.FlipView(), views.Rotate90CCWView()]
    e = explorers.explore_views(x, turns, [P.format(d) for d in (1, 4, 7, 2)])
    labels = e.controls["view"]
    assert len(labels) == 4 and len(e.static) == 4
    for k, (label, v) in enumerate(zip(labels, turns)):
        f = e.frame(view=label)
        assert torch.equal(f.images, to_display(v.view(x)))
        assert P.format((1, 4, 7, 2)[k]) in f.caption
    with pytest.raises(ValueError, match="one prompt per view"):
        explorers.explore_views(x, turns, [P.format(1)])


def test_explore_motion_blur_applies_the_decompositions_blur():
    x = _images()
    e = explorers.explore_motion_blur(x, lengths=(1, 7, 13))
    assert torch.equal(e.frame(length=1).images, to_display(x))
    assert torch.equal(e.frame(length=7).images, to_display(decompositions.MotionBlur(7, -45.0).components(x)[0]))
    assert e.static == [{"length": 1}, {"length": 7}]


# --------------------------------------------------------------------------- the notebooks' parameters

@pytest.mark.parametrize("name, n", [("rotation_prompts", 4), ("jigsaw_prompts", 2), ("color_prompts", 2),
                                     ("motion_prompts", 2), ("band_prompts", 3)])
def test_prompt_lists_take_exactly_one_prompt_per_view_or_part(name, n):
    profiles.check_parameters(**{name: [P.format(k) for k in range(n)]})
    with pytest.raises(ValueError, match=rf"^{name} must be a list of {n} prompt strings"):
        profiles.check_parameters(**{name: [P.format(k) for k in range(n + 1)]})
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        profiles.check_parameters(**{name: [""] * n})


@pytest.mark.parametrize("profile", ["quick", "seed"])
def test_each_profile_has_the_new_notebooks_prompts(profile):
    prompts = profiles.part_a_settings(profile)["prompts"]
    for key, n in (("rotations", 4), ("jigsaw", 2), ("color_hybrid", 2), ("motion_hybrid", 2), ("three_bands", 3)):
        assert len(prompts[key]) == n and all(isinstance(p, str) and p for p in prompts[key]), key
    assert isinstance(prompts["held_hybrid"], str) and prompts["held_hybrid"]


def test_the_quick_prompts_name_what_the_judge_reads():
    """mini's prompts must name a digit (and the colour part a style), or the notebooks' readings cannot run."""
    from diffnb.mini import world
    prompts = profiles.part_a_settings("quick")["prompts"]
    for key in ("rotations", "jigsaw", "motion_hybrid", "three_bands"):
        assert all(world.parse_prompt(p)[0] is not None for p in prompts[key]), key
    assert world.parse_prompt(prompts["color_hybrid"][0])[0] is not None
    assert world.parse_prompt(prompts["color_hybrid"][1])[1] is not None
    assert world.parse_prompt(prompts["held_hybrid"])[0] is not None
