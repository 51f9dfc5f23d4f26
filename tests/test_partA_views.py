"""Views for visual anagrams: every orthogonal view passes ``orthogonality`` and inverts exactly, the failure
views fail it, each view is the one visual anagrams defines, many-view anagrams are one UNet batch a step,
and bad views are refused at the edge."""
from __future__ import annotations

import functools

import pytest
import torch

import torchvision.transforms.functional as TF

from diffnb.a.denoise import strided_timesteps
from diffnb.a.views import (BlurFailureView, FlipView, IdentityView, InnerCircleView, JigsawView, NegateView,
                            PatchPermuteView, PermutationView, PixelPermuteView, Rotate90CCWView, Rotate90CWView,
                            RotateBilinearFailureView, ScaleFailureView, SkewView, SquareHingeView, View,
                            check_permutation, make_anagram, noise_tolerances, orthogonality, orthogonality_table)
from diffnb.core.counting import counting_bundle
from diffnb.core.devices import make_generator

pytestmark = pytest.mark.usefixtures("one_thread")

S = 32                                                   # the size of mini and of the tiny test model
ORTHOGONAL = {
    "identity": lambda s: IdentityView(), "flip": lambda s: FlipView(), "negate": lambda s: NegateView(),
    "rotate-cw": lambda s: Rotate90CWView(), "rotate-ccw": lambda s: Rotate90CCWView(), "skew": lambda s: SkewView(),
    "jigsaw": lambda s: JigsawView(s), "patch-permute": lambda s: PatchPermuteView(s),
    "pixel-permute": lambda s: PixelPermuteView(s), "inner-circle": lambda s: InnerCircleView(s),
    "square-hinge": lambda s: SquareHingeView(s),
}
FAILURES = {"bilinear-135": RotateBilinearFailureView, "blur": BlurFailureView, "scale": ScaleFailureView}


@functools.cache
def measured(name: str):
    make = ORTHOGONAL.get(name) or (lambda s: FAILURES[name]())
    return orthogonality(make(S), (3, S, S))


@pytest.fixture(scope="module")
def ts(stage1):
    return strided_timesteps(stage1, 990, 110)


# --------------------------------------------------------------------------- orthogonality

@pytest.mark.parametrize("name", ORTHOGONAL)
def test_every_view_is_orthogonal_and_exactly_invertible(name):
    r = measured(name)
    assert r.gram_deviation == 0                              # a permutation (or negation) of the identity basis: exact
    assert r.orthogonal and r.inverse_exact and r.usable, str(r)


@pytest.mark.parametrize("name", ORTHOGONAL)
def test_the_view_of_noise_has_identity_covariance_within_the_derived_tolerance(name):
    r = measured(name)
    assert r.mean_deviation <= r.mean_tolerance and r.cov_deviation <= r.cov_tolerance, str(r)
    assert (r.mean_tolerance, r.cov_tolerance) == noise_tolerances(r.samples, 3 * S * S, r.alpha)


@pytest.mark.parametrize("name", ORTHOGONAL)
def test_inverse_view_brings_noise_and_variance_back_exactly(name):
    v = ORTHOGONAL[name](S)
    x = torch.randn(2, 3, S, S, generator=make_generator(1))
    assert torch.equal(v.inverse_view(v.view(x)), x)
    if name != "negate":                                      # a permutation moves the variance like the noise
        assert torch.equal(v.inverse_view_variance(v.view(x)), x)
    if name not in ("identity", "negate"):
        assert not torch.equal(v.view(x), x)                  # it does move pixels


@pytest.mark.parametrize("name", FAILURES)
def test_failure_views_fail(name):
    r = measured(name)
    assert not r.orthogonal and not r.usable, str(r)
    assert r.gram_deviation > 1e4 * r.gram_tolerance and r.cov_deviation > r.cov_tolerance
    assert r.inverse_exact == (name == "scale")               # the scaling inverts exactly (x 0.5, / 0.5) and still fails


def test_orthogonality_catches_what_the_noise_alone_would_miss():
    near = ScaleFailureView(0.99)                             # covariance 0.98 I: inside the noise tolerance
    r = orthogonality(near, (1, 16, 16))
    assert r.cov_deviation <= r.cov_tolerance and not r.orthogonal
    assert r.gram_deviation == pytest.approx(1 - 0.99 ** 2, rel=1e-6)


def test_a_view_whose_inverse_is_wrong_is_not_usable():
    class Wrong(Rotate90CWView):
        def inverse_view(self, eps):                          # turns further instead of back
            return torch.rot90(eps, -1, dims=(-2, -1))

    r = orthogonality(Wrong(), (1, 8, 8))
    assert r.orthogonal and not r.inverse_exact and not r.usable


def test_the_noise_tolerance_follows_the_sample_count():
    m1, c1 = noise_tolerances(1000, 3072, 1e-6)
    m4, c4 = noise_tolerances(4000, 3072, 1e-6)
    assert m4 == pytest.approx(m1 / 2) and c4 < c1 / 1.9     # ~ 1 / sqrt(S)
    # an exactly N(0, I) sample stays inside it: the max of S-sample covariances of pure noise
    z = torch.randn(512, 64, generator=make_generator(0))
    cov = z.T @ z / 512 - torch.eye(64)
    assert float(cov.abs().max()) <= noise_tolerances(512, 64, 1e-6)[1]


def test_orthogonality_at_deepfloyd_size_probes_a_random_basis():
    ok = orthogonality(JigsawView(64), (3, 64, 64), samples=512)
    bad = orthogonality(RotateBilinearFailureView(), (3, 64, 64), samples=512)
    assert "512 random orthonormal" in ok.basis and ok.usable and ok.gram_deviation < ok.gram_tolerance
    assert not bad.orthogonal and bad.gram_deviation > 0.3


def test_the_table_has_a_row_per_view():
    table = orthogonality_table([measured("jigsaw"), measured("blur")])
    assert "JigsawView(size=32" in table and "NOT orthogonal" in table and "false alarm" in table


# --------------------------------------------------------------------------- each view is the one visual anagrams defines

def test_rotations_compose_to_the_identity():
    x = torch.randn(2, 3, 8, 8)
    cw, ccw = Rotate90CWView(), Rotate90CCWView()
    four = x
    for _ in range(4):
        four = cw.view(four)
    assert torch.equal(four, x)
    assert torch.equal(cw.view(ccw.view(x)), x) and torch.equal(ccw.view(cw.view(x)), x)
    assert torch.equal(cw.view(cw.view(x)), FlipView().view(x))   # two quarter turns are the flip


def test_rotations_turn_the_right_way():
    x = torch.randn(1, 3, S, S)
    nearest = TF.InterpolationMode.NEAREST                     # visual anagrams' Rotate90CWView / Rotate90CCWView
    assert torch.equal(Rotate90CWView().view(x), TF.rotate(x, -90, interpolation=nearest))
    assert torch.equal(Rotate90CCWView().view(x), TF.rotate(x, 90, interpolation=nearest))
    corner = torch.zeros(1, 1, 4, 4)
    corner[..., 0, 0] = 1                                      # top left goes to top right, clockwise
    assert Rotate90CWView().view(corner)[0, 0, 0, 3] == 1


def test_skew_rolls_columns_as_visual_anagrams():
    x = torch.randn(3, S, S)
    cols = [x[:, :, j].roll(int(1.5 * (j - S // 2)), dims=1) for j in range(S)]   # visual_anagrams SkewView.skew_image
    assert torch.equal(SkewView(1.5).view(x[None])[0], torch.stack(cols, dim=2))


def test_inner_circle_and_square_hinge_are_visual_anagrams_permutations():
    def inner_circle_perm(size, r):                             # visual_anagrams permutations.make_inner_circle_perm
        perm = []
        for iy in range(size):
            for ix in range(size):
                x, y = ix - size // 2 + 0.5, iy - size // 2 + 0.5
                if x ** 2 + y ** 2 < r ** 2:
                    x, y = -x, -y
                perm.append(int(x + size // 2 - 0.5) + int(y + size // 2 - 0.5) * size)
        return torch.tensor(perm)

    def square_hinge(size):                                     # visual_anagrams permutations.make_square_hinge
        s = size // 3
        idxs = torch.arange(size ** 2).view(size, size)
        for i in range(3):
            for j in range(3):
                k = -1 if (i + j) % 2 == 0 else 1
                idxs[i * s:(i + 1) * s, j * s:(j + 1) * s] = torch.rot90(idxs[i * s:(i + 1) * s, j * s:(j + 1) * s], k=k)
        return idxs.flatten()

    assert torch.equal(InnerCircleView(64).perm, inner_circle_perm(64, 24))
    assert torch.equal(SquareHingeView(64).perm, square_hinge(64))
    assert torch.equal(SquareHingeView(S).perm, square_hinge(S))


def test_jigsaw_moves_whole_pieces_round_their_orbits():
    v = JigsawView(S, pieces=4, seed=0)
    s = S // 4
    x = torch.randn(1, 3, S, S)
    y = v.view(x)
    kinds = lambda rc: ("corner" if rc[0] in (0, 3) and rc[1] in (0, 3)           # noqa: E731
                        else "inner" if rc[0] in (1, 2) and rc[1] in (1, 2) else "edge")
    assert sorted(to for _, to, _ in v.moves) == sorted(fr for fr, _, _ in v.moves) and len(v.moves) == 16
    assert any(fr != to for fr, to, _ in v.moves)
    for (r0, c0), (r1, c1), k in v.moves:
        assert kinds((r0, c0)) == kinds((r1, c1))              # a corner piece stays a corner ...
        piece = x[..., r0 * s:(r0 + 1) * s, c0 * s:(c0 + 1) * s]
        assert torch.equal(y[..., r1 * s:(r1 + 1) * s, c1 * s:(c1 + 1) * s], torch.rot90(piece, -k, dims=(-2, -1)))
    assert not torch.equal(JigsawView(S, seed=1).perm, v.perm)


def test_patch_and_pixel_permutations():
    x = torch.randn(1, 3, S, S)
    v = PatchPermuteView(S, patch_size=8, seed=3)
    y = v.view(x)
    for q, p in enumerate(v.patch_perm.tolist()):               # output patch q is input patch perm[q], unchanged
        (qr, qc), (pr, pc) = divmod(q, 4), divmod(p, 4)
        assert torch.equal(y[..., qr * 8:qr * 8 + 8, qc * 8:qc * 8 + 8], x[..., pr * 8:pr * 8 + 8, pc * 8:pc * 8 + 8])
    assert torch.equal(PixelPermuteView(S, seed=5).perm, PixelPermuteView(S, seed=5).perm)
    assert not torch.equal(PixelPermuteView(S, seed=5).perm, PixelPermuteView(S, seed=6).perm)
    perm = torch.randperm(S * S, generator=make_generator(2))
    mine = PixelPermuteView(S, perm=perm)
    assert torch.equal(mine.view(x).flatten(-2), x.flatten(-2)[..., perm])


# --------------------------------------------------------------------------- many views, one batch



@pytest.mark.parametrize("views", [
    pytest.param(lambda: [IdentityView(), Rotate90CWView(), FlipView()], id="three-views"),
    pytest.param(lambda: [IdentityView(), Rotate90CWView(), FlipView(), Rotate90CCWView()], id="four-rotations"),
    pytest.param(lambda: [IdentityView(), JigsawView(S), InnerCircleView(S)], id="jigsaw-and-circle"),
])
def test_many_view_anagrams_are_one_unet_batch_per_step(stage1, emb, ts, views):
    views = views()
    bundle, counter = counting_bundle(stage1)
    calls = counter.calls
    prompts = [emb.get(p) for p in ("a man mid fall", "a paint brush", "a rocket ship", "a photo of a caveman")]
    out = make_anagram(bundle, views, prompts[:len(views)], emb.get(""), ts, generator=make_generator(3), num_images=2)
    assert out.shape == (2, 3, S, S) and torch.isfinite(out).all()
    assert calls == [2 * len(views) * 2] * (len(ts) - 1)        # K views x (uncond, cond) x 2 images, one call a step


# --------------------------------------------------------------------------- bad views, refused at the edge

def test_a_view_that_does_not_fit_the_image_is_refused_before_sampling(stage1, emb, ts):
    bundle, counter = counting_bundle(stage1)
    calls = counter.calls
    c, u = emb.get("a rocket ship"), emb.get("")
    with pytest.raises(ValueError, match=r"JigsawView\(size=64.*built for 64 x 64 images, but the image is 32 x 32; "
                                         r"build the view at the image's size"):
        make_anagram(bundle, [IdentityView(), JigsawView(64)], [c, c], u, ts)
    with pytest.raises(ValueError, match=r"quarter turn, which needs a square image; this one is 32 x 64"):
        make_anagram(bundle, [IdentityView(), Rotate90CWView()], [c, c], u, ts, width=64)
    with pytest.raises(ValueError, match=r"kernel_size=33 is too large for a 16 x 16 image"):
        make_anagram(bundle, [IdentityView(), BlurFailureView()], [c, c], u, ts, height=16, width=16)
    with pytest.raises(ValueError, match=r"give one prompt embedding per view: 3 views, 2 prompts"):
        make_anagram(bundle, [IdentityView(), FlipView(), Rotate90CWView()], [c, c], u, ts)
    assert calls == []


@pytest.mark.parametrize("make, error, match", [
    (lambda: PixelPermuteView(4, perm=[0] * 16), ValueError, r"not a permutation: index 0 appears 16 times and 1 never"),
    (lambda: PixelPermuteView(4, perm=list(range(15))), ValueError, r"has shape \(15,\); .* needs exactly 16 entries"),
    (lambda: PixelPermuteView(4, perm=list(range(1, 17))), ValueError, r"entries must lie in 0 \.\. 15"),
    (lambda: PixelPermuteView(4, perm=torch.arange(16.0)), TypeError, r"integer indices, got dtype torch.float32"),
    (lambda: PermutationView(torch.arange(16).view(4, 4), 4), ValueError, r"has shape \(4, 4\)"),
    (lambda: PatchPermuteView(32, patch_size=8, perm=[0, 0] + list(range(2, 16))), ValueError,
     r"perm \(of the patches\) is not a permutation"),
    (lambda: PatchPermuteView(32, patch_size=6), ValueError, r"patch_size=6 must divide the image side size=32; choose"),
    (lambda: JigsawView(30), ValueError, r"pieces=4 must be an even number >= 2 that divides size=30"),
    (lambda: JigsawView(32, pieces=3), ValueError, r"pieces=3 must be an even number"),
    (lambda: InnerCircleView(0), ValueError, r"size must be the image's side in pixels.*sample_size"),
    (lambda: SquareHingeView(32, blocks=0), ValueError, r"blocks=0 must be a whole number of squares"),
    (lambda: ScaleFailureView(1.0), ValueError, r"factor=1 is not a failure view"),
    (lambda: ScaleFailureView(0), ValueError, r"0 is not invertible"),
    (lambda: SkewView("1.5"), TypeError, r"factor .* must be a number"),
    (lambda: orthogonality(IdentityView(), (32, 32)), ValueError, r"size must be \(C, H, W\)"),
    (lambda: orthogonality(lambda x: x), TypeError, r"is not a view"),
    (lambda: orthogonality(JigsawView(64)), ValueError, r"built for 64 x 64 images, but the image is 32 x 32"),
], ids=["repeats", "too-short", "out-of-range", "float-perm", "2d-perm", "patch-repeats", "patch-size",
        "jigsaw-size", "jigsaw-odd", "size-0", "hinge-blocks", "scale-1", "scale-0", "skew-str", "ortho-size",
        "ortho-not-a-view", "ortho-wrong-size"])
def test_bad_views_are_refused_with_the_fix(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_a_permutation_view_called_directly_on_another_size_names_the_fix():
    with pytest.raises(ValueError, match=r"built for 32 x 32 images, but the image is 64 x 64"):
        PixelPermuteView(32).view(torch.zeros(1, 3, 64, 64))


def test_check_permutation_accepts_a_permutation():
    p = check_permutation([2, 0, 1], 3)
    assert p.dtype == torch.int64 and p.tolist() == [2, 0, 1]


def test_a_custom_view_without_check_size_still_works(stage1, emb, ts):
    class Transpose:                                              # duck-typed: no View base, no check_size
        def view(self, x):
            return x.transpose(-2, -1)

        def inverse_view(self, eps):
            return eps.transpose(-2, -1)

        def inverse_view_variance(self, v):
            return v.transpose(-2, -1)

    out = make_anagram(stage1, [IdentityView(), Transpose()], [emb.get("a rocket ship")] * 2, emb.get(""), ts,
                       generator=make_generator(1))
    assert torch.isfinite(out).all() and isinstance(View().check_size(3, 5), type(None))


def test_the_call_counter_counts_each_call_and_is_the_model_otherwise(stage1):
    from diffnb.core.counting import CallCounter
    bundle, counter = counting_bundle(stage1)
    assert bundle.unet.config is stage1.unet.config and bundle.scheduler is stage1.scheduler and counter.nfe == 0
    s = stage1.unet.config.sample_size
    x = torch.zeros(3, 3, s, s)
    e = torch.zeros(3, 1, stage1.unet.config.encoder_hid_dim or stage1.unet.config.cross_attention_dim)
    out = bundle.unet(x, 500, encoder_hidden_states=e).sample
    assert torch.equal(out, stage1.unet(x, 500, encoder_hidden_states=e).sample)
    assert counter.calls == [3] and counter.nfe == 1
    double = CallCounter(lambda x: 2 * x)
    assert double(torch.ones(4)).sum() == 8 and double.calls == [4]
