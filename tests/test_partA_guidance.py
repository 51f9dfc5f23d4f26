"""Views, anagrams and hybrids: invariants, and equality with plain CFG sampling where they must agree."""
from __future__ import annotations


import pytest
import torch

from diffnb.a.checks import check_embeds
from diffnb.a.denoise import cfg_estimator, plain_estimator, pure_noise, sample_cfg, strided_timesteps
from diffnb.core.counting import counting_bundle
from diffnb.core.devices import make_generator
from diffnb.a.views import (FlipView, IdentityView, NegateView, View, highpass, hybrid_estimator, lowpass,
                             make_anagram, make_flip_illusion, make_hybrids)
from diffnb.core.numerics import EPS, agreement, formula_bound
from diffnb.part_a import estimators_agree, sample_budget


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ts(stage1):
    return strided_timesteps(stage1, 990, 60)


def test_flip_view_twice_is_identity():
    x = torch.randn(2, 3, 8, 6)
    v = FlipView()
    assert torch.equal(v.view(v.view(x)), x)
    assert torch.equal(v.inverse_view(v.view(x)), x)
    assert torch.equal(v.view(x), torch.rot90(x, 2, dims=(-2, -1)))   # 180 degree rotation


def test_negate_view_keeps_the_variance():
    x = torch.randn(1, 3, 4, 4)
    v = NegateView()
    assert torch.equal(v.inverse_view(v.view(x)), x)
    assert torch.equal(v.inverse_view_variance(x), x)


def test_lowpass_plus_highpass_is_the_signal():
    x = torch.randn(1, 3, 40, 40)
    # low + (x - low): two roundings on values the size of x and of low(x)
    bound = formula_bound(max(x.abs().max(), lowpass(x).abs().max()), ops=2)
    torch.testing.assert_close(lowpass(x) + highpass(x), x, atol=bound, rtol=0)
    assert not agreement(lowpass(x) + lowpass(x), x, bound)          # a dropped high-pass is caught


def _whole_sample_budget(stage1, c, u, ts):
    """The CFG sample's float32 budget (diffnb.core.numerics): per-step rounding at gamma = 7, times the
    sampler's gain over the 33 steps."""
    x = pure_noise(stage1, make_generator(0))
    return sample_budget(stage1, cfg_estimator(stage1, check_embeds(c, stage1, "c"), check_embeds(u, stage1, "u"), 7.0),
                         x, ts, 7.0)


def test_anagram_of_identity_views_equals_cfg_sampling(stage1, emb, ts):
    c, u = emb.get("a man mid fall"), emb.get("")
    plain = sample_cfg(stage1, c, u, ts, 7.0, make_generator(100))
    ana = make_anagram(stage1, [IdentityView(), IdentityView()], [c, c], u, ts, 7.0, make_generator(100))
    torch.testing.assert_close(ana, plain, atol=_whole_sample_budget(stage1, c, u, ts), rtol=0)


def test_hybrid_of_one_prompt_twice_equals_cfg_sampling(stage1, emb, ts):
    c, u = emb.get("a photo of a caveman"), emb.get("")
    plain = sample_cfg(stage1, c, u, ts, 7.0, make_generator(100))
    hyb = make_hybrids(stage1, c, c, u, ts, 7.0, make_generator(100))
    torch.testing.assert_close(hyb, plain, atol=_whole_sample_budget(stage1, c, u, ts), rtol=0)


def test_flip_illusion_is_one_unet_batch_per_step(stage1, emb, ts):
    bundle, counter = counting_bundle(stage1)
    calls, unet = counter.calls, stage1.unet
    out = make_flip_illusion(bundle, emb.get("a man mid fall"), emb.get("a paint brush"), emb.get(""), ts,
                             generator=make_generator(100), num_images=2)
    s = unet.config.sample_size
    assert out.shape == (2, 3, s, s)
    assert calls == [8] * (len(ts) - 1)                            # 2 views x (uncond, cond) x 2 images


def test_flip_illusion_differs_from_plain_sampling(stage1, emb, ts):
    c1, c2, u = emb.get("a man mid fall"), emb.get("a paint brush"), emb.get("")
    plain = sample_cfg(stage1, c1, u, ts, 7.0, make_generator(100))
    flip = make_flip_illusion(stage1, c1, c2, u, ts, generator=make_generator(100))
    assert not torch.allclose(flip, plain)


def test_bad_views_and_prompts(stage1, emb, ts):
    c, u = emb.get("a rocket ship"), emb.get("")
    with pytest.raises(ValueError, match="one prompt embedding per view"):
        make_anagram(stage1, [IdentityView(), FlipView()], [c], u, ts)
    with pytest.raises(TypeError, match="not a view"):
        make_anagram(stage1, [lambda x: x], [c], u, ts)
    with pytest.raises(ValueError, match="too large"):
        make_hybrids(stage1, c, c, u, ts, height=16, width=16)


def test_custom_view_is_easy_to_add(stage1, emb, ts):
    class TransposeView(View):
        def view(self, x):
            return x.transpose(-2, -1)

        def inverse_view(self, eps):
            return eps.transpose(-2, -1)

    out = make_anagram(stage1, [IdentityView(), TransposeView()], [emb.get("a rocket ship"), emb.get("a paint brush")],
                       emb.get(""), ts, generator=make_generator(1))
    assert torch.isfinite(out).all()


def test_estimators_agree_checks_the_identity_step_by_step(stage1, emb, ts):
    c, c2, u = (check_embeds(emb.get(p), stage1, p) for p in ("a photo of a caveman", "a man mid fall", ""))
    x = pure_noise(stage1, make_generator(0), num_images=2)
    assert estimators_agree(cfg_estimator(stage1, c, u, 1.0), plain_estimator(stage1, c), x, ts, scale=1.0)
    agree = estimators_agree(hybrid_estimator(stage1, c, c, u, 7.0), cfg_estimator(stage1, c, u, 7.0), x, ts, scale=7.0)
    assert agree and agree.bound > 100 * EPS                      # the budget is not vanishingly small
    assert not estimators_agree(cfg_estimator(stage1, c, u, 7.0), plain_estimator(stage1, c), x, ts, scale=7.0)
    assert not estimators_agree(hybrid_estimator(stage1, c, c2, u, 7.0), cfg_estimator(stage1, c, u, 7.0), x, ts,
                                scale=7.0)


def test_estimators_agree_needs_timesteps(stage1, emb):
    c = check_embeds(emb.get("a rocket ship"), stage1, "c")
    x = pure_noise(stage1, make_generator(0))
    with pytest.raises(ValueError, match="at least one timestep"):
        estimators_agree(plain_estimator(stage1, c), plain_estimator(stage1, c), x, [], scale=1.0)
