"""The digit world of the mini model: deterministic renders in three styles, and its prompt grammar."""
import pytest
import torch

from diffnb.mini import world
from diffnb.a.prompts import PromptNotFoundError


@pytest.fixture(scope="module")
def grid():
    d = torch.arange(30) % 10
    s = torch.arange(30) // 10
    return world.render_world(30, seed=3, digits=d, styles=s)


def test_renders_are_seeded_and_shaped(grid):
    again = world.render_world(30, seed=3, digits=torch.arange(30) % 10, styles=torch.arange(30) // 10)
    other = world.render_world(30, seed=4, digits=torch.arange(30) % 10, styles=torch.arange(30) // 10)
    assert grid.images.shape == (30, 3, world.SIZE, world.SIZE)
    assert grid.images.min() >= 0 and grid.images.max() <= 1
    assert torch.equal(grid.images, again.images)
    assert not torch.equal(grid.images, other.images)
    assert grid.digits.tolist() == (torch.arange(30) % 10).tolist()
    assert grid.styles.tolist() == (torch.arange(30) // 10).tolist()


def test_the_styles_look_as_named(grid):
    photo, crayon, pencil = grid.images[:10], grid.images[10:20], grid.images[20:]
    corners = lambda x: x[:, :, :3, :3].mean((2, 3))                               # noqa: E731  (N, 3) background
    # pencil: grey everywhere (no colour), light background
    assert (pencil.max(1).values - pencil.min(1).values).max() < 1e-6
    assert corners(pencil).min() > 0.85
    # crayon: cream paper (red > blue), coloured strokes
    paper = corners(crayon)
    assert (paper[:, 0] > paper[:, 2] + 0.05).all() and (paper.mean(1) > 0.8).all()
    # photo: backgrounds vary a lot from picture to picture
    assert corners(photo).std(0).mean() > 0.15
    # the digit is drawn: every picture has pixels far from its background
    for x in (photo, crayon, pencil):
        far = (x - corners(x)[:, :, None, None]).abs().amax(1) > 0.3
        assert (far.flatten(1).float().mean(1) > 0.03).all()


def test_style_names_and_bad_labels():
    w = world.render_world(3, seed=0, digits=[1, 2, 3], styles=["photo", "crayon drawing", "pencil sketch"])
    assert w.styles.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown style"):
        world.render_world(2, seed=0, styles="oil painting")
    with pytest.raises(ValueError, match="digits must lie in 0..9"):
        world.render_world(2, seed=0, digits=[3, 10])
    with pytest.raises(ValueError, match="2 entries for n=3"):
        world.render_world(3, seed=0, digits=[1, 2])


def test_every_phrasing_parses_back_to_what_it_names():
    for d in [None, *range(10)]:
        for s in [None, 0, 1, 2]:
            for p in world.all_prompts(d, s):
                assert world.parse_prompt(p) == (d, s), p
    assert world.prompt(7, "photo") == "a photo of the digit 7"
    assert world.parse_prompt(world.prompt(8, "crayon drawing", 4)) == (8, 1)
    assert world.prompt() == "a high quality picture"
    assert world.parse_prompt("") == (None, None)


def test_unknown_words_name_the_known_ones():
    with pytest.raises(PromptNotFoundError, match="does not know the word.*'cat'.*knows only") as err:
        world.tokenize("a photo of a cat")
    assert "crayon" in str(err.value) and "pencil" in str(err.value)
    with pytest.raises(ValueError, match="digit must be an int 0..9"):
        world.prompt(12)
