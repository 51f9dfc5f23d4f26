"""The world judge: its two heads, its bookkeeping, its cache and what a small trained one reads."""
import pytest
import torch

import diffnb.mini.judge as wj
from diffnb.b.judge import NOT_A_DIGIT
from diffnb.mini.world import STYLES, render_world
from diffnb.mini.judge import WorldClassifier, WorldJudge, get_world_judge

SMALL = dict(seed=0, n_train=4000, epochs=3)       # 15 s of training: reads most digits (~85%)


class FixedLogits(torch.nn.Module):
    """A stand-in classifier whose readings the test sets."""

    def __init__(self, digit_logits, style_logits):
        super().__init__()
        self.d, self.s = digit_logits, style_logits
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.d[: len(x)], self.s[: len(x)]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small judge trained into a temporary build folder; yields (judge, build folder)."""
    build = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFNB_BUILD", str(build))
        yield get_world_judge(**SMALL), build


def test_both_heads_have_their_shapes():
    digit_logits, style_logits = WorldClassifier()(torch.rand(5, 3, 32, 32))
    assert digit_logits.shape == (5, 11) and style_logits.shape == (5, len(STYLES)) == (5, 3)


def test_read_counts_what_the_model_says():
    big = 20.0
    d, s = torch.zeros(4, 11), torch.zeros(4, 3)
    d[0, 3] = big                 # a confident 3
    d[1, 3] = big                 # another 3
    d[2, NOT_A_DIGIT] = big       # confidently not a digit
    d[3, 7] = 0.5                 # a hesitant 7: read as 7, but not legible
    s[[0, 1, 2, 3], [1, 0, 1, 1]] = big
    judge = WorldJudge(FixedLogits(d, s), 1.0, 1.0)
    x = torch.rand(4, 3, 32, 32)

    digit, digit_conf, style, style_conf = judge.predict(x)
    assert digit.tolist() == [3, 3, NOT_A_DIGIT, 7] and style.tolist() == [1, 0, 1, 1]
    assert digit_conf[0] > 0.99 and digit_conf[3] < 0.5 and style_conf.min() > 0.99

    r = judge.read(x, digit=3, style="crayon drawing")
    assert r == {"digit_accuracy": 0.5, "style_accuracy": 0.75, "both": 0.25, "legible": 0.5}
    r = judge.read(x, digit=torch.tensor([3, 1, 2, 7]), style=torch.tensor([1, 0, 2, 1]))
    assert r["digit_accuracy"] == 0.5 and r["style_accuracy"] == 0.75 and r["both"] == 0.5
    assert judge.read(x, threshold=0.1)["legible"] == 0.75          # the hesitant 7 counts now
    r = judge.read(x, digit=3)
    assert r["style_accuracy"] is None and r["both"] is None and r["digit_accuracy"] == 0.5
    with pytest.raises(ValueError, match="4 images"):
        judge.read(x, digit=[3, 3])
    with pytest.raises(ValueError, match="unknown style"):
        judge.read(x, style="oil painting")


def test_predict_names_the_shape_it_expects():
    judge = WorldJudge(WorldClassifier(), 0.0, 0.0)
    for bad in (torch.rand(2, 1, 32, 32), torch.rand(3, 32, 32), torch.rand(2, 3, 28, 28)):
        with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
            judge.predict(bad)


def test_a_quarter_of_each_style_is_scrambled_and_the_rest_kept():
    w = render_world(128, seed=11)
    x, done = wj._scramble_world(w.images, w.styles, torch.Generator().manual_seed(0))
    assert 24 <= done.sum() <= 40
    assert all(done[w.styles == k].any() for k in range(3))
    assert torch.equal(x[~done], w.images[~done])
    changed = (x[done] - w.images[done]).abs().amax((1, 2, 3)) > 0.1
    assert changed.float().mean() > 0.9
    grey = w.styles == STYLES.index("pencil sketch")                     # pencil stays grey
    assert torch.allclose(x[grey][:, 0], x[grey][:, 1])


def test_training_is_deterministic():
    g = torch.Generator().manual_seed(5)
    images, digits, styles = (torch.rand(256, 3, 32, 32, generator=g), torch.randint(0, 10, (256,), generator=g),
                              torch.randint(0, 3, (256,), generator=g))
    states = []
    for _ in range(2):
        model = WorldClassifier()
        wj._fit(model, images, digits, styles, epochs=1, seed=3, progress=False)
        states.append(model.state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_the_judge_is_cached_and_loaded(small, monkeypatch):
    judge, build = small
    path = build / "judge" / f"world-v1-n{SMALL['n_train']}-e{SMALL['epochs']}-s{SMALL['seed']}.safetensors"
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    assert wj.cache_path(**SMALL) == path

    def no_training(*args, **kwargs):
        raise AssertionError("the cached judge was trained again")

    monkeypatch.setattr(wj, "_fit", no_training)
    again = get_world_judge(**SMALL)
    for k, v in judge.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k]), k
    assert again.digit_accuracy == judge.digit_accuracy and again.style_accuracy == judge.style_accuracy
    assert again.train_seconds == pytest.approx(judge.train_seconds, abs=0.1)


def test_a_small_judge_reads_digits_styles_and_muddles(small):
    judge, _ = small
    assert judge.digit_accuracy > 0.6 and judge.style_accuracy > 0.9    # on its held-out renders
    w = render_world(300, seed=12345)
    clean = judge.read(w.images, w.digits, w.styles, threshold=0.5)      # a small judge is less sure
    assert clean["digit_accuracy"] > 0.6 and clean["style_accuracy"] > 0.9 and clean["legible"] > 0.5
    muddled, done = wj._scramble_world(w.images, w.styles, torch.Generator().manual_seed(1), share=1.0)
    assert done.float().mean() > 0.9           # all but overlays that show no second digit
    muddled, styles = muddled[done], w.styles[done]
    digit, _, style, _ = judge.predict(muddled)
    assert (digit == NOT_A_DIGIT).float().mean() > 0.5
    assert judge.read(muddled, threshold=0.5)["legible"] < clean["legible"] - 0.3
    assert (style == styles).float().mean() > 0.8                        # a muddle keeps its style
