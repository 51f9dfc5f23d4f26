"""Factorized diffusion: the parts of every decomposition sum to the image, each part is what factorized
diffusion defines, the factorized sampler is CFG when every part has the same prompt and the hybrid bit for
bit with the low/high split, one UNet batch a step, the inverse-problem mode holds its part, and bad input
is refused at the edge."""
from __future__ import annotations


import pytest
import torch

import torch.nn.functional as F
import torchvision.transforms.functional as TF

from diffnb.a.checks import check_embeds
from diffnb.a.decompositions import (Decomposition, GrayColor, LowHigh, MotionBlur, ThreeBands, check_decomposition,
                                     factorized_estimator, highpass, lowpass, make_factorized)
from diffnb.a.denoise import EmbeddingBatch, cfg_combine, cfg_estimator, pure_noise, run_unet, sample_cfg, strided_timesteps
from diffnb.a.views import hybrid_estimator, make_hybrids
from diffnb.core.counting import counting_bundle
from diffnb.core.devices import make_generator
from diffnb.core.numerics import agreement, formula_bound
from diffnb.part_a import sample_budget

pytestmark = pytest.mark.usefixtures("one_thread")

S = 32
DECOMPOSITIONS = {"low-high": LowHigh, "three-bands": ThreeBands, "gray-color": GrayColor, "motion": MotionBlur,
                  "motion-0deg-5": lambda: MotionBlur(5, 0.0), "three-bands-wide": lambda: ThreeBands((1.5, 3.0), 33)}


@pytest.fixture(scope="module")
def ts(stage1):
    return strided_timesteps(stage1, 990, 60)


def _x(n=2, seed=0):
    return torch.rand(n, 3, S, S, generator=make_generator(seed)) * 2 - 1


# --------------------------------------------------------------------------- the parts

@pytest.mark.parametrize("name", DECOMPOSITIONS)
def test_parts_sum_to_the_image(name):
    d = DECOMPOSITIONS[name]()
    x = _x()
    parts = d.components(x)
    assert len(parts) == len(d.names) and all(p.shape == x.shape for p in parts)
    bound = formula_bound(max(float(x.abs().max()), max(float(p.abs().max()) for p in parts)), 2 * len(parts))
    assert agreement(sum(parts), x, bound), name
    assert check_decomposition(d, (3, S, S)) == len(parts)
    assert not agreement(sum(parts[:-1]), x, bound)           # no part is zero: dropping one is caught


def test_gray_is_constant_over_channels_and_color_has_zero_channel_mean():
    x = _x()
    gray, color = GrayColor().components(x)
    assert torch.equal(gray, gray[:, :1].expand_as(gray))
    torch.testing.assert_close(gray[:, 0], x.mean(1), atol=0, rtol=0)
    assert float(color.mean(1).abs().max()) <= formula_bound(float(x.abs().max()), 4)
    assert float(color.abs().max()) > 0.1                      # a random image has colour


def test_low_high_is_the_course_lowpass_and_highpass():
    x = _x()
    low, high = LowHigh().components(x)
    assert torch.equal(low, lowpass(x)) and torch.equal(high, highpass(x))
    low3, high3 = LowHigh(9, 3.0).components(x)
    assert torch.equal(low3, TF.gaussian_blur(x, [9, 9], [3.0, 3.0]))


def test_three_bands_are_factorized_diffusions_bandpasses():
    x = _x()
    mp = TF.gaussian_blur(x, 25, 1.0)                          # visual_anagrams compute_triple_bandpass, sigmas 1 and 2
    hp = x - mp
    lp = TF.gaussian_blur(mp, 25, 2.0)
    low, mid, high = ThreeBands().components(x)
    assert torch.equal(low, lp) and torch.equal(mid, mp - lp) and torch.equal(high, hp)


def test_motion_blur_is_factorized_diffusions_kernel():
    m = MotionBlur(7, -45.0)
    assert torch.equal(m.kernel, torch.eye(7) / 7)              # visual_anagrams MotionBlurView: eye(size) / size
    x = _x(1)
    ref = torch.cat([F.conv2d(x[:, i:i + 1], (torch.eye(7) / 7)[None, None], padding=3) for i in range(3)], dim=1)
    torch.testing.assert_close(m.components(x)[0], ref, atol=formula_bound(1.0, 8), rtol=0)
    horizontal = MotionBlur(5, 0.0).kernel
    assert torch.equal(horizontal, torch.zeros(5, 5).index_fill_(0, torch.tensor([2]), 0.2))
    assert torch.equal(MotionBlur(5, 90.0).kernel, horizontal.T)
    assert torch.equal(MotionBlur(7, 45.0).kernel, torch.flip(torch.eye(7), dims=(1,)) / 7)   # bottom left to top right


# --------------------------------------------------------------------------- the factorized estimator and sampler

def _reference_hybrid(stage1, c_low, c_high, u, scale, k=33, sigma=2.0):
    """Section 1.9's hybrid estimator as it was written before the factorized estimator existed."""
    batch = EmbeddingBatch([u, c_low, c_high])

    def estimate(x, t):
        (eps_u, _), (eps_1, var_1), (eps_2, _) = run_unet(stage1, [x, x, x], batch, t)
        eps_1, eps_2 = cfg_combine(eps_u, eps_1, scale), cfg_combine(eps_u, eps_2, scale)
        return lowpass(eps_1, k, sigma) + highpass(eps_2, k, sigma), var_1
    return estimate


def _embeds(stage1, emb, *prompts):
    return [check_embeds(emb.get(p), stage1, p) for p in prompts]


def test_the_hybrid_is_the_factorized_estimator_bit_for_bit(stage1, emb, ts):
    c1, c2, u = _embeds(stage1, emb, "a man mid fall", "a paint brush", "")
    x = pure_noise(stage1, make_generator(0), num_images=2)
    for scale, k, sigma in ((7.0, 33, 2.0), (-2.0, 9, 3.0)):
        ref = _reference_hybrid(stage1, c1, c2, u, scale, k, sigma)
        for est in (hybrid_estimator(stage1, c1, c2, u, scale, k, sigma),
                    factorized_estimator(stage1, LowHigh(k, sigma), [c1, c2], u, scale)):
            for t in (990, 510, 30):
                (e_ref, v_ref), (e, v) = ref(x, t), est(x, t)
                assert torch.equal(e, e_ref) and torch.equal(v, v_ref)
    swapped = factorized_estimator(stage1, LowHigh(), [c2, c1], u, 7.0)(x, 510)[0]
    assert not torch.equal(swapped, _reference_hybrid(stage1, c1, c2, u, 7.0)(x, 510)[0])


def test_make_factorized_with_low_high_is_make_hybrids(stage1, emb, ts):
    c1, c2, u = (emb.get(p) for p in ("a man mid fall", "a paint brush", ""))
    hyb = make_hybrids(stage1, c1, c2, u, ts, 7.0, make_generator(100), num_images=2)
    fac = make_factorized(stage1, LowHigh(), [c1, c2], u, ts, 7.0, make_generator(100), num_images=2)
    assert torch.equal(fac, hyb)


@pytest.mark.parametrize("make", [LowHigh, ThreeBands, GrayColor, MotionBlur], ids=lambda m: m.__name__)
def test_one_prompt_for_every_part_is_plain_cfg_sampling(stage1, emb, ts, make):
    c, u = emb.get("a photo of a caveman"), emb.get("")
    plain = sample_cfg(stage1, c, u, ts, 7.0, make_generator(100))
    d = make()
    fac = make_factorized(stage1, d, [c] * len(d.names), u, ts, 7.0, make_generator(100))
    x = pure_noise(stage1, make_generator(0))
    budget = sample_budget(stage1, cfg_estimator(stage1, *_embeds(stage1, emb, "a photo of a caveman", ""), 7.0),
                           x, ts, 7.0)
    found = agreement(fac, plain, budget)
    assert found, str(found)
    other = make_factorized(stage1, d, [c] * (len(d.names) - 1) + [emb.get("a rocket ship")], u, ts, 7.0,
                            make_generator(100))
    assert not agreement(other, plain, budget)                 # a different prompt on one part changes the sample




@pytest.mark.parametrize("make", [LowHigh, ThreeBands], ids=["two-parts", "three-parts"])
def test_one_unet_batch_per_step_for_any_number_of_parts(stage1, emb, ts, make):
    bundle, counter = counting_bundle(stage1)
    calls = counter.calls
    d = make()
    prompts = [emb.get(p) for p in ("a man mid fall", "a paint brush", "a rocket ship")][:len(d.names)]
    out = make_factorized(bundle, d, prompts, emb.get(""), ts, generator=make_generator(1), num_images=2)
    assert out.shape == (2, 3, S, S) and torch.isfinite(out).all()
    assert calls == [(len(d.names) + 1) * 2] * (len(ts) - 1)   # (uncond + K conds) x 2 images, one call a step


# --------------------------------------------------------------------------- inverse problems

def test_fixed_gray_part_is_the_given_images_at_t0(stage1, emb, ts):
    image = _x(1, seed=7).clamp(-1, 1)
    c1, c2, u = (emb.get(p) for p in ("a man mid fall", "a paint brush", ""))
    d = GrayColor()
    out = make_factorized(stage1, d, [c1, c2], u, ts, generator=make_generator(2), num_images=2, fixed=("gray", image))
    free = make_factorized(stage1, d, [c1, c2], u, ts, generator=make_generator(2), num_images=2)
    want = d.components(image)[0].expand_as(out)
    bound = formula_bound(max(float(out.abs().max()), 1.0), 8)
    assert agreement(d.components(out)[0], want, bound)
    assert not agreement(d.components(free)[0], want, 0.1)     # without fixed= the gray part is the model's own
    assert not agreement(d.components(out)[1], d.components(image)[1].expand_as(out), 0.1)   # the colour is generated


def test_fixed_low_frequencies_follow_the_given_image(stage1, emb, ts):
    image = lowpass(_x(1, seed=8), 9, 3.0).clamp(-1, 1)
    c1, c2, u = (emb.get(p) for p in ("a man mid fall", "a paint brush", ""))
    d = LowHigh()
    out = make_factorized(stage1, d, [c1, c2], u, ts, generator=make_generator(2), fixed=(0, image))
    free = make_factorized(stage1, d, [c1, c2], u, ts, generator=make_generator(2))
    target = lowpass(image)
    err_fixed, err_free = (float((lowpass(y) - target).abs().max()) for y in (out, free))
    # lowpass is not a projection (lowpass(lowpass(x)) != lowpass(x)), so low(out) = low(image) holds only up to
    # the blur of the generated high band: much closer than a free sample, not exact
    assert err_fixed < 0.25 * err_free, (err_fixed, err_free)


# --------------------------------------------------------------------------- bad input, refused at the edge

class LowLow(Decomposition):
    names = ("low", "also low")

    def components(self, x):
        return [lowpass(x), lowpass(x)]


def _bad_cases(stage1, emb, ts):
    c, u = emb.get("a rocket ship"), emb.get("")
    img = _x(1).clamp(-1, 1)
    return [
        (lambda: make_factorized(stage1, LowLow(), [c, c], u, ts), ValueError,
         r"LowLow\(\): its parts do not sum to the image: max \|sum of parts - x\| = .* make the last part the residual"),
        (lambda: make_factorized(stage1, LowHigh(), [c], u, ts), ValueError,
         r"one prompt embedding per part: LowHigh\(.*\) has 2 parts \['low', 'high'\], got 1 prompts"),
        (lambda: make_factorized(stage1, ThreeBands(), [c, c], u, ts), ValueError, r"has 3 parts .* got 2 prompts"),
        (lambda: make_factorized(stage1, LowHigh(), c, u, ts), TypeError, r"prompts must be a list of embeddings"),
        (lambda: make_factorized(stage1, LowHigh, [c, c], u, ts), TypeError, r"is not a decomposition"),
        (lambda: make_factorized(stage1, lambda x: [x], [c], u, ts), TypeError, r"is not a decomposition"),
        (lambda: make_factorized(stage1, LowHigh(), [c, c], u, ts, height=16, width=16), ValueError,
         r"kernel_size=33 is too large for a 16 x 16 image"),
        (lambda: make_factorized(stage1, LowHigh(), [c, c], u, ts, fixed=(0, _x(1, 0)[..., :16, :16])), ValueError,
         r"fixed image has shape \(1, 3, 16, 16\); expected \(1, 3, 32, 32\).*load_image\(path, 32\)"),
        (lambda: make_factorized(stage1, LowHigh(), [c, c], u, ts, fixed=(0, img * 255)), ValueError,
         r"fixed image has values up to .* a clean image must be in \[-1, 1\]"),
        (lambda: make_factorized(stage1, LowHigh(), [c, c], u, ts, fixed=(2, img)), ValueError,
         r"fixed part must be an index in 0 \.\. 1"),
        (lambda: make_factorized(stage1, LowHigh(), [c, c], u, ts, fixed=("mid", img)), ValueError,
         r"fixed names part 'mid', but the parts are \['low', 'high'\]"),
        (lambda: make_factorized(stage1, LowHigh(), [c, c], u, ts, fixed=img), TypeError,
         r"fixed must be \(part, image\)"),
        (lambda: make_factorized(stage1, LowHigh(), [c, c], u, ts, scale=float("nan")), ValueError,
         r"scale .*finite.*such as 7\.0"),
        (lambda: MotionBlur(6), ValueError, r"length must be a positive odd number of pixels, got 6"),
        (lambda: make_factorized(stage1, MotionBlur(33), [c, c], u, ts), ValueError,
         r"length=33 is longer than a 32 x 32 image"),
        (lambda: ThreeBands((1.0,)), ValueError, r"sigmas must be two blur widths"),
        (lambda: LowHigh(4), ValueError, r"kernel_size must be a positive odd integer, got 4"),
    ]


BAD_IDS = ["parts-do-not-sum", "one-prompt-two-parts", "two-prompts-three-parts", "prompts-a-tensor",
           "decomposition-a-class", "decomposition-a-function", "kernel-too-large", "fixed-wrong-size",
           "fixed-out-of-range", "fixed-index", "fixed-name", "fixed-not-a-pair", "scale-nan", "motion-even",
           "motion-too-long", "bands-one-sigma", "lowhigh-even-kernel"]


@pytest.mark.parametrize("case", range(len(BAD_IDS)), ids=BAD_IDS)
def test_bad_input_is_refused_before_sampling(stage1, emb, ts, case):
    bundle, counter = counting_bundle(stage1)
    calls = counter.calls
    fn, error, match = _bad_cases(bundle, emb, ts)[case]
    with pytest.raises(error, match=match):
        fn()
    assert calls == []                                          # refused at the edge: no UNet call was made


def test_check_decomposition_names_a_part_of_the_wrong_shape():
    class Cropped(Decomposition):
        names = ("a", "b")

        def components(self, x):
            return [x[..., :8, :8], x]

    with pytest.raises(ValueError, match=r"part 0 is \(1, 3, 8, 8\); every part must have the image's shape"):
        check_decomposition(Cropped())
