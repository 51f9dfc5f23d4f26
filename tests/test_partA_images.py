"""Images and masks: any mode in, (1, 3, H, W) in [-1, 1] out; masks checked with clear messages."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffnb.a.images import (check_mask, ellipse_mask, load_image, load_mask, rectangle_mask, to_display)


def _save(img: Image.Image, path):
    img.save(path)
    return path


@pytest.mark.parametrize("mode, suffix", [("RGB", ".jpg"), ("RGBA", ".png"), ("L", ".png"), ("P", ".gif"),
                                          ("CMYK", ".jpg"), ("I;16", ".png"), ("LA", ".png")])
def test_load_image_any_mode(tmp_path, mode, suffix):
    img = Image.new("RGB", (80, 50), (200, 30, 30)).convert(mode)
    x = load_image(_save(img, tmp_path / f"im{suffix}"), 32)
    assert x.shape == (1, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1


def test_load_image_crops_the_centre_of_the_shorter_side():
    arr = np.zeros((40, 120, 3), np.uint8)
    arr[:, 40:80] = 255                                           # a white centre band as wide as the height
    x = load_image(Image.fromarray(arr), (20, 20))
    assert x.shape == (1, 3, 20, 20)
    assert x.mean() > 0.9                                         # the crop is the white centre


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    assert torch.allclose(load_image(img, 16), torch.ones(1, 3, 16, 16))


def test_missing_image_names_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_image(tmp_path / "nope.jpg", 64)
    msg = str(info.value)
    assert "nope.jpg" in msg and "data/" in msg and "-p" in msg


def test_to_display_maps_to_unit_range():
    x = torch.tensor([-1.0, 0.0, 1.0, 3.0])
    assert torch.equal(to_display(x), torch.tensor([0.0, 0.5, 1.0, 1.0]))


def test_masks(tmp_path):
    m = rectangle_mask(16, 4, 2, 8, 6)
    assert m.shape == (1, 1, 16, 16) and m.sum() == 48
    e = ellipse_mask((16, 20), 8, 10, 4, 6)
    assert e.shape == (1, 1, 16, 20) and e[0, 0, 8, 10] == 1 and e[0, 0, 0, 0] == 0
    arr = np.zeros((32, 32), np.uint8)
    arr[:, 16:] = 255                                             # white = edit
    loaded = load_mask(_save(Image.fromarray(arr), tmp_path / "mask.png"), 16)
    assert loaded.shape == (1, 1, 16, 16) and set(loaded.unique().tolist()) == {0.0, 1.0}
    assert loaded[0, 0, :, 12:].eq(1).all() and loaded[0, 0, :, :4].eq(0).all()


@pytest.mark.parametrize("shape", [(16, 16), (1, 16, 16), (1, 1, 16, 16), (2, 1, 16, 16)])
def test_check_mask_accepts_the_documented_shapes(shape):
    image = torch.zeros(2, 3, 16, 16)
    m = check_mask(torch.ones(shape, dtype=torch.bool), image)
    assert m.shape[1:] == (1, 16, 16) and m.dtype == image.dtype


def test_check_mask_errors():
    image = torch.zeros(1, 3, 64, 64)
    with pytest.raises(ValueError, match=r"mask has shape \(1, 64, 32\); expected \(1, 64, 64\) like the image"):
        check_mask(torch.ones(1, 64, 32), image)
    with pytest.raises(ValueError, match=r"expected \(1, 1, 64, 64\)"):
        check_mask(torch.ones(3, 1, 64, 64), image)
    with pytest.raises(ValueError, match="only 0"):
        check_mask(torch.rand(64, 64), image)
    with pytest.raises(ValueError, match="outside"):
        rectangle_mask(64, 70, 0, 4, 4)
