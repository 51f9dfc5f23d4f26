"""Explorers (diffnb.core.explore and the course's explorers): every setting rendered once, a moved
control shows that setting's picture, the static figure shows the chosen settings, bad input is refused
with the fix, and the explorers compute what their sections say (closed forms)."""
import io

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from diffnb.a import explorers as a_explorers
from diffnb.a.images import to_display
from diffnb.b import explorers as b_explorers
from diffnb.core import devices
from diffnb.core.explore import CSS_CLASS, Explorer, tile

matplotlib.use("Agg")


def _levels(calls=None):
    def render(level, size=4):
        if calls is not None:
            calls.append((level, size))
        return torch.full((2, 1, size, size), level / 10), f"level {level}, size {size}"
    return render


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_every_setting_is_rendered_once_when_built():
    calls = []
    e = Explorer(_levels(calls), {"level": [0, 5, 10], "size": [4, 8]})
    assert sorted(calls) == [(lv, s) for lv in (0, 5, 10) for s in (4, 8)]
    e.png(level=5, size=8)
    e.widget()
    e.sliders["level"].value = 10
    assert len(calls) == 6                      # moving a control renders nothing


def test_a_moved_control_shows_that_settings_picture_and_caption():
    e = Explorer(_levels(), {"level": [0, 5, 10], "size": [4, 8]}, title="demo")
    box = e.widget()
    assert CSS_CLASS in box._dom_classes
    assert e.image.value == e.png(level=0, size=4)
    e.sliders["level"].value = 5
    e.sliders["size"].value = 8
    assert e.image.value == e.png(level=5, size=8)
    assert "level 5, size 8" in e.caption.value
    pixels = _decode(e.image.value)
    assert abs(int(pixels[0, 0, 0]) - round(0.5 * 255)) <= 1     # the picture is the level's grey


def test_the_sliders_pick_the_picture_in_the_browser_without_the_kernel():
    """Each control's slider ``index`` is linked in the browser (``jslink``) to every Stack that holds that
    control's values; setting the Stacks as those links do (no kernel callback) shows the setting's picture."""
    import ipywidgets as w
    from ipywidgets.widgets.widget_link import Link

    e = Explorer(_levels(), {"level": [0, 5, 10], "size": [4, 8]})
    e.widget()
    links = [x for x in list(w.Widget.widgets.values())
             if isinstance(x, Link) and any(x.source[0] is s for s in e.sliders.values())]
    by_slider = {name: [x for x in links if x.source[0] is s] for name, s in e.sliders.items()}
    assert [len(by_slider["level"]), len(by_slider["size"])] == [1, 3]       # one top Stack, one per level
    for name, group in by_slider.items():
        for link in group:
            assert link.source[1] == "index" and link.target[1] == "selected_index"
            assert isinstance(link.target[0], w.Stack) and len(link.target[0].children) == len(e.controls[name])
    for link in by_slider["level"]:                 # what the browser does on ArrowRight twice: level -> 10
        link.target[0].selected_index = 2
    for link in by_slider["size"]:                  # and size -> 8
        link.target[0].selected_index = 1
    assert e.image.value == e.png(level=10, size=8)
    assert "level 10, size 8" in e.caption.value


def test_tile_lays_out_rows_and_scales_by_whole_factors():
    images = torch.stack([torch.full((1, 2, 3), v) for v in (0.0, 0.25, 0.5, 1.0)])   # (4, 1, 2, 3)
    out = tile(images, nrow=2, tile_px=6, gap=1)
    assert out.shape == (2 * 4 + 1, 2 * 6 + 1, 3)                # k = 2: 4 x 6 tiles, 2 x 2 grid, 1 px gaps
    assert (out[4, :, :] == 255).all() and (out[:, 6, :] == 255).all()
    assert out[0, 0, 0] == 0 and out[0, 7, 0] == round(0.25 * 255) and out[5, 0, 0] == round(0.5 * 255)
    assert out[-1, -1, 0] == 255


def test_static_figure_rows_are_the_chosen_settings():
    e = Explorer(_levels(), {"level": list(range(10))})
    assert e.static == [{"level": 0}, {"level": 3}, {"level": 6}, {"level": 9}]
    fig = e.figure()
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert titles == ["level 0, size 4", "level 3, size 4", "level 6, size 4", "level 9, size 4"]
    e2 = Explorer(_levels(), {"level": [1, 2]}, static=[{"level": 2}])
    assert e2.static == [{"level": 2}]


@pytest.mark.parametrize("controls, static, message", [
    ({}, None, "at least one control"),
    ({"level": []}, None, "offers no values"),
    ({"level": [1, 1]}, None, "offers a value twice"),
    ({"level": [1, 2]}, [{"size": 3}], "unknown control"),
    ({"level": [1, 2]}, [{"level": 3}], "not on the explorer's grid"),
])
def test_bad_controls_are_refused_with_the_fix(controls, static, message):
    with pytest.raises(ValueError, match=message):
        Explorer(_levels(), controls, static=static)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(1, 28, 28), r"expected images \(N, C, H, W\)"),
    (torch.zeros(1, 2, 8, 8), r"with C = 1 or 3"),
    (torch.full((1, 1, 8, 8), float("nan")), "non-finite"),
    ("picture", "returned str"),
])
def test_a_render_returning_no_images_is_named(bad, message):
    with pytest.raises(ValueError, match=message):
        Explorer(lambda level: bad, {"level": [1]})


def test_explore_sigma_with_an_identity_denoiser_matches_the_closed_form():
    """With a denoiser that returns its input, the output row is the clamped noisy row and the caption's
    MSE is sigma^2 mean(eps^2) for the explorer's seeded eps."""
    identity = torch.nn.Conv2d(1, 1, 1, bias=False)
    torch.nn.init.ones_(identity.weight)
    digits = torch.rand(3, 1, 28, 28)
    e = b_explorers.explore_sigma(identity, digits, sigmas=[0.0, 0.5], seed=4)
    eps = torch.randn(digits.shape, generator=torch.Generator().manual_seed(4))
    frame = e.frame(sigma=0.5)
    assert torch.allclose(frame.images[:3], (digits + 0.5 * eps).clamp(0, 1))
    assert torch.allclose(frame.images[3:], frame.images[:3])
    assert f"{float((0.25 * eps ** 2).mean()):.4f}" in frame.caption
    assert torch.allclose(e.frame(sigma=0.0).images[3:], digits)


def test_explore_turn_ends_upside_down_and_distance_one_is_the_image():
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    turned = a_explorers.explore_turn(x, angles=[0, 90, 180])
    assert torch.allclose(turned.frame(angle=0).images, to_display(x), atol=1e-6)
    assert torch.allclose(turned.frame(angle=180).images, to_display(torch.rot90(x, 2, dims=(-2, -1))), atol=1e-5)
    near_far = a_explorers.explore_distance(x, factors=[1, 4])
    assert torch.allclose(near_far.frame(distance=1).images, to_display(x))
    far = near_far.frame(distance=4).images
    assert far.std() < to_display(x).std()                     # the far view keeps the low frequencies only


def test_mask_regions_cover_what_their_names_say():
    regions = a_explorers.mask_regions(32)
    assert regions["top half"][..., :16, :].eq(1).all() and regions["top half"][..., 16:, :].eq(0).all()
    assert regions["left half"][..., :, :16].eq(1).all() and regions["left half"][..., :, 16:].eq(0).all()
    assert float(regions["centre"].mean()) == 0.25


def test_choose_threads(monkeypatch):
    n = torch.get_num_threads()
    try:
        monkeypatch.delenv("DIFFNB_THREADS", raising=False)
        monkeypatch.setattr(devices, "_cores_busy_elsewhere", lambda: 0)
        cores = devices.free_cores()
        assert devices.choose_threads(torch.device("cpu"), "quick") == cores == torch.get_num_threads()
        monkeypatch.setattr(devices, "_cores_busy_elsewhere", lambda: cores + 3)     # a busy machine
        assert devices.free_cores() == 1
        assert devices.choose_threads(torch.device("cpu"), "quick") == 1 == torch.get_num_threads()
        monkeypatch.setenv("DIFFNB_THREADS", "3")
        assert devices.choose_threads(torch.device("cpu"), "quick") == 3 == torch.get_num_threads()
        monkeypatch.setenv("DIFFNB_THREADS", "many")
        with pytest.raises(ValueError, match="DIFFNB_THREADS must be a positive integer"):
            devices.choose_threads(torch.device("cpu"), "quick")
    finally:
        torch.set_num_threads(n)


def test_plot_losses_draws_another_run_as_its_moving_average():
    import matplotlib.pyplot as plt
    from diffnb.core.plotting import plot_losses

    fig = plot_losses([4.0, 2.0, 1.0, 1.0], [2, 4], smooth=2, label="constant", compare={"scheduled": [3.0, 1.0, 1.0]})
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}
    assert list(lines) == ["constant", "mean of 2 steps", "scheduled, mean of 2 steps"]
    assert lines["mean of 2 steps"].get_ydata().tolist() == [3.0, 1.5, 1.0]
    other = lines["scheduled, mean of 2 steps"]
    assert other.get_xdata().tolist() == [2, 3] and other.get_ydata().tolist() == [2.0, 1.0]
    plt.close(fig)
    raw = plot_losses([1.0, 0.5], compare={"other": [2.0, 1.0]})           # smooth=0: drawn as they are
    assert [ln.get_label() for ln in raw.axes[0].get_lines()] == ["per step", "other"]
    plt.close(raw)
