"""Views, visual anagrams and hybrid images (sections 1.8-1.9): new noise estimators for the one loop.

Conventions (stated once), as in ``diffnb.a.denoise``: images ``(N, C, H, W)`` in [-1, 1], timesteps
descending (990, 960, ..., 0), the bundle / embeddings / generator passed explicitly.

* A **view** is a small object with ``view(x)`` (how the model sees the image) and
  ``inverse_view(eps)`` (how to bring its noise estimate back).  Views that rearrange pixels apply
  the same map to the variance; a view that changes pixel values (``NegateView``) leaves the
  variance alone (``inverse_view_variance``).  Add a view by subclassing ``View``.
* A view must be **orthogonal** (V^T V = I: a pixel permutation, or a negation), so that the view of
  pure noise z ~ N(0, I) is still N(0, I) and the model sees the noise it was trained on (Geng et al.
  2024, *Visual Anagrams*, sec. 3.2).  ``orthogonality(view)`` measures it; the ``...FailureView``
  classes (a bilinear rotation by 135 degrees, a blur, a brightness scaling) are not orthogonal.
* Pixel permutations are written ``view(x)[..., p] = x[..., perm[p]]`` over the H * W pixel positions
  in raster order (row-major), the same for every channel: ``perm[p]`` is where output pixel p comes
  from.  Size-dependent views take the image size at construction and refuse another size through
  ``check_size(h, w)``, which the public functions call once, at the edge.
* An **anagram** averages, over views k, ``inverse_view_k(CFG eps of prompt_k on view_k(x))``; its
  variance is the mean of the inverse-viewed conditional variances.
* A **hybrid** sums ``lowpass(eps_1) + highpass(eps_2)``, lowpass = torchvision's Gaussian blur
  (33 x 33, sigma 2), highpass = x - lowpass(x); its variance is the first (low-frequency) prompt's.
  ``diffnb.a.decompositions`` generalises it (factorized diffusion: any split of an image into parts).
* Every UNet pass of a step (each view, conditional and unconditional) is one batch.
* ``scale`` is the guidance scale gamma of every CFG estimate: any finite number (1 = no guidance; a
  negative gamma is legal and steers away from the prompt).  It and every other input are checked
  once, when the estimator is built or the public function called, never at a step.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torchvision.transforms.functional as TF

from diffnb.a.checks import check_blur, check_embeds, check_sample, check_scale, check_timesteps, model_device_dtype
from diffnb.core.checks import check_number, is_int
from diffnb.core.numerics import formula_bound
from diffnb.a.decompositions import LowHigh, factorized_estimator
from diffnb.a.decompositions import highpass, lowpass  # noqa: F401  (section 1.9 names them here: views.lowpass)
from diffnb.a.denoise import EmbeddingBatch, Estimator, cfg_combine, denoise_loop, pure_noise, run_unet, strided_timesteps
from diffnb.a.schedule import scheduler_of
from diffnb.a.models import check_bundle


# --------------------------------------------------------------------------- views

class View:
    """Base view: identity. ``view(x)`` and ``inverse_view(eps)`` take and return ``(N, C, H, W)``."""
    name = "identity"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse_view(self, eps: torch.Tensor) -> torch.Tensor:
        return eps

    def inverse_view_variance(self, variance: torch.Tensor) -> torch.Tensor:
        """The variance channels go back like the noise unless the view changes pixel values."""
        return self.inverse_view(variance)

    def check_size(self, h: int, w: int) -> None:
        """Refuse an image size ``h x w`` the view does not fit (a ``ValueError`` naming the sizes and the
        fix); the public functions call it once, before sampling.  The base view fits every size."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class IdentityView(View):
    """The image as it is."""
    name = "identity"


class FlipView(View):
    """Rotate by 180 degrees (flip both H and W); its own inverse, so applying it twice is the identity."""
    name = "flip"

    def view(self, x):
        return torch.flip(x, dims=(-2, -1))

    def inverse_view(self, eps):
        return torch.flip(eps, dims=(-2, -1))


class NegateView(View):
    """Negative image: view(x) = -x, noise back by negation; the variance is unchanged."""
    name = "negate"

    def view(self, x):
        return -x

    def inverse_view(self, eps):
        return -eps

    def inverse_view_variance(self, variance):
        return variance


def _square(view: View, h: int, w: int) -> None:
    if h != w:
        raise ValueError(f"{view!r} turns the image a quarter turn, which needs a square image; this one is {h} x {w}. "
                         f"Sample at height == width (the model's own size, height=None, width=None)")


class Rotate90CWView(View):
    """A quarter turn clockwise: ``view(x) = rot90(x, -1)``; the inverse turns back counter-clockwise.
    A pixel permutation; the variance channels turn back with the noise.  Square images only."""
    name = "rotate 90 cw"

    def view(self, x):
        return torch.rot90(x, -1, dims=(-2, -1))

    def inverse_view(self, eps):
        return torch.rot90(eps, 1, dims=(-2, -1))

    def check_size(self, h, w):
        _square(self, h, w)


class Rotate90CCWView(View):
    """A quarter turn counter-clockwise: ``view(x) = rot90(x, 1)``; the inverse turns back clockwise.
    A pixel permutation; the variance channels turn back with the noise.  Square images only."""
    name = "rotate 90 ccw"

    def view(self, x):
        return torch.rot90(x, 1, dims=(-2, -1))

    def inverse_view(self, eps):
        return torch.rot90(eps, -1, dims=(-2, -1))

    def check_size(self, h, w):
        _square(self, h, w)


class SkewView(View):
    """Column rolls: column j is rolled down (cyclically, along H) by ``d_j = int(factor * (j - W // 2))``
    pixels, so the middle column stays and the others shear (visual anagrams' ``SkewView``, default
    factor 1.5).  A pixel permutation for any size; the inverse rolls back; the variance channels go
    back with the noise."""
    name = "skew"

    def __init__(self, factor: float = 1.5):
        self.factor = check_number("factor (pixels of roll per column)", factor, fix="e.g. SkewView(1.5)")
        self._cache: dict = {}

    def _rows(self, h: int, w: int, sign: int, device) -> torch.Tensor:
        """``(H, W)`` source rows: out[i, j] = x[(i - sign d_j) mod H, j] (built once per size and device)."""
        key = (h, w, sign, str(device))
        if key not in self._cache:
            d = torch.tensor([int(self.factor * (j - w // 2)) for j in range(w)], device=device)
            i = torch.arange(h, device=device)[:, None]
            self._cache[key] = (i - sign * d[None, :]) % h
        return self._cache[key]

    def _roll(self, x, sign):
        rows = self._rows(x.shape[-2], x.shape[-1], sign, x.device)
        return x.gather(-2, rows.expand(x.shape))

    def view(self, x):
        return self._roll(x, 1)

    def inverse_view(self, eps):
        return self._roll(eps, -1)

    def __repr__(self):
        return f"SkewView(factor={self.factor:g})"


# --------------------------------------------------------------------------- pixel permutations

def _check_size_arg(size, name: str = "size") -> int:
    if not is_int(size) or size < 1:
        raise ValueError(f"{name} must be the image's side in pixels, a positive integer, got {size!r}; pass the "
                         "model's size, stage1.unet.config.sample_size (32 on mini, 64 on DeepFloyd IF)")
    return int(size)


def check_permutation(perm, n: int, name: str = "perm") -> torch.Tensor:
    """``perm`` as a 1-D int64 tensor holding each of 0 .. n-1 exactly once; anything else (wrong length,
    repeats, out-of-range or non-integer entries) is refused with the fix."""
    t = torch.as_tensor(perm)
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer indices, got dtype {t.dtype}; e.g. torch.randperm({n})")
    t = t.detach().to("cpu", torch.int64)
    if t.dim() != 1 or t.numel() != n:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; a permutation of the {n} positions needs exactly {n} "
                         f"entries (each of 0 .. {n - 1} once), e.g. torch.randperm({n})")
    if n and (int(t.min()) < 0 or int(t.max()) >= n):
        raise ValueError(f"{name} holds {int(t.min())} .. {int(t.max())}; its entries must lie in 0 .. {n - 1} "
                         f"(each once), e.g. torch.randperm({n})")
    counts = torch.bincount(t, minlength=n)
    if bool((counts != 1).any()):
        twice, never = int((counts > 1).nonzero()[0]), int((counts == 0).nonzero()[0])
        raise ValueError(f"{name} is not a permutation: index {twice} appears {int(counts[twice])} times and {never} "
                         f"never ({int((counts == 0).sum())} indices are missing); a view must be invertible, so each "
                         f"of 0 .. {n - 1} must appear exactly once, e.g. torch.randperm({n})")
    return t


def _seeded(seed) -> torch.Generator:
    if not is_int(seed):
        raise TypeError(f"seed must be an integer, got {seed!r} ({type(seed).__name__})")
    return torch.Generator().manual_seed(int(seed))


class PermutationView(View):
    """Any pixel permutation of ``size x size`` images: ``view(x)[..., p] = x[..., perm[p]]`` over the
    H * W positions in raster order, every channel alike; ``inverse_view`` applies the inverse
    permutation, so ``inverse_view(view(x)) == x`` exactly.  The variance channels go back like the
    noise.  ``perm`` is checked at construction (``check_permutation``)."""
    name = "permutation"

    def __init__(self, perm, size: int):
        self.size = _check_size_arg(size)
        self.perm = check_permutation(perm, self.size * self.size)
        self.inverse = torch.empty_like(self.perm)
        self.inverse[self.perm] = torch.arange(self.perm.numel())   # perm[inverse[q]] = q
        self._on: dict = {}

    def _index(self, which: str, device) -> torch.Tensor:
        key = (which, str(device))
        if key not in self._on:
            self._on[key] = getattr(self, which).to(device)
        return self._on[key]

    def _gather(self, x, which: str):
        if x.shape[-2:] != (self.size, self.size):            # a shape comparison: the only check at a step
            self.check_size(*x.shape[-2:])
        flat = x.reshape(*x.shape[:-2], -1)                   # (..., H * W)
        return flat.index_select(-1, self._index(which, x.device)).reshape(x.shape)

    def view(self, x):
        return self._gather(x, "perm")

    def inverse_view(self, eps):
        return self._gather(eps, "inverse")

    def check_size(self, h, w):
        if (h, w) != (self.size, self.size):
            raise ValueError(f"{self!r} was built for {self.size} x {self.size} images, but the image is {h} x {w}; "
                             f"build the view at the image's size, e.g. {type(self).__name__}(size={h}, ...) "
                             "(stage1.unet.config.sample_size: 32 on mini, 64 on DeepFloyd IF)")

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size})"


class PixelPermuteView(PermutationView):
    """A seeded random permutation of all ``size x size`` pixel positions (or the given ``perm``, length
    size * size, checked at construction).  Channels move together; the variance goes back like the noise."""
    name = "pixel permute"

    def __init__(self, size: int, seed: int = 0, perm=None):
        size = _check_size_arg(size)
        self.seed = seed
        if perm is None:
            perm = torch.randperm(size * size, generator=_seeded(seed))
        super().__init__(perm, size)


class PatchPermuteView(PermutationView):
    """The image cut into square patches of ``patch_size`` pixels, the patches shuffled by a seeded
    permutation (or the given ``perm`` of the (size / patch_size)^2 patches, raster order), their insides
    unchanged.  A pixel permutation; the variance goes back like the noise."""
    name = "patch permute"

    def __init__(self, size: int, patch_size: int = 8, seed: int = 0, perm=None):
        size = _check_size_arg(size)
        if not is_int(patch_size) or patch_size < 1 or size % patch_size:
            divisors = [d for d in range(2, size) if size % d == 0]
            raise ValueError(f"patch_size={patch_size!r} must divide the image side size={size}; choose one of "
                             f"{divisors}")
        self.patch_size, self.seed = int(patch_size), seed
        g = size // self.patch_size                               # patches per side
        if perm is None:
            perm = torch.randperm(g * g, generator=_seeded(seed))
        self.patch_perm = check_permutation(perm, g * g, "perm (of the patches)")
        idx = torch.arange(size * size).view(g, self.patch_size, g, self.patch_size).permute(0, 2, 1, 3)
        idx = idx.reshape(g * g, self.patch_size, self.patch_size)[self.patch_perm]   # output patch q = input patch perm[q]
        super().__init__(idx.view(g, g, self.patch_size, self.patch_size).permute(0, 2, 1, 3).reshape(-1), size)

    def __repr__(self):
        return f"PatchPermuteView(size={self.size}, patch_size={self.patch_size})"


def _cw(idx: torch.Tensor, quarter_turns: int) -> torch.Tensor:
    """``idx`` turned ``quarter_turns`` quarter turns clockwise."""
    return torch.rot90(idx, -quarter_turns, dims=(-2, -1))


class JigsawView(PermutationView):
    """A jigsaw: the ``size x size`` image cut into ``pieces x pieces`` square pieces; the four pieces of
    each orbit under a quarter turn of the whole grid (for 4 x 4: the corners, the inner four, two sets
    of edge pieces) trade places by a seeded permutation, and a piece that moves k slots round its orbit
    is turned k quarter turns clockwise, so it fits its new slot as it would in a real puzzle.

    Visual anagrams' ``JigsawView`` does the same on 4 x 4 pieces with knobs (shapes from PNG masks) and
    may also swap the two edge pieces of a side; here the pieces are squares, so no mask is needed.
    A pixel permutation; the variance goes back like the noise.  ``moves`` lists
    ``((row, col) from, (row, col) to, quarter turns clockwise)`` for every piece, for putting it back
    together by hand."""
    name = "jigsaw"

    def __init__(self, size: int, pieces: int = 4, seed: int = 0):
        size = _check_size_arg(size)
        if not is_int(pieces) or pieces < 2 or pieces % 2 or size % pieces:
            raise ValueError(f"pieces={pieces!r} must be an even number >= 2 that divides size={size} (pieces per "
                             "side; every piece then has three partners under a quarter turn), e.g. pieces=4")
        self.pieces, self.seed = int(pieces), seed
        n, s = self.pieces, size // self.pieces
        g = _seeded(seed)
        orbits, seen = [], set()
        for r in range(n):
            for c in range(n):
                if (r, c) not in seen:
                    orbit = [(r, c)]
                    for _ in range(3):                        # a quarter turn clockwise: (r, c) -> (c, n-1-r)
                        orbit.append((orbit[-1][1], n - 1 - orbit[-1][0]))
                    seen.update(orbit)
                    orbits.append(orbit)
        while True:                                           # redraw the (rare) draw that moves nothing
            slots = [torch.randperm(4, generator=g).tolist() for _ in orbits]
            if any(sl != [0, 1, 2, 3] for sl in slots):
                break
        src = torch.arange(size * size).view(size, size)
        out = torch.empty_like(src)
        self.moves = []
        for orbit, slot in zip(orbits, slots):
            for j, d in enumerate(slot):                      # the piece in slot j goes to slot d
                k = (d - j) % 4
                (r0, c0), (r1, c1) = orbit[j], orbit[d]
                out[r1 * s:(r1 + 1) * s, c1 * s:(c1 + 1) * s] = _cw(src, k)[r1 * s:(r1 + 1) * s, c1 * s:(c1 + 1) * s]
                self.moves.append(((r0, c0), (r1, c1), k))
        super().__init__(out.reshape(-1), size)

    def __repr__(self):
        return f"JigsawView(size={self.size}, pieces={self.pieces}, seed={self.seed})"


class InnerCircleView(PermutationView):
    """The pixels inside a centred circle of ``radius`` (default 3/8 of the side, visual anagrams' 24 of
    64) turned by 180 degrees, the ring outside unchanged.  Pixel centres sit at half-integers, so the
    circle maps onto itself and this is a pixel permutation (its own inverse); the variance goes back
    like the noise."""
    name = "inner circle"

    def __init__(self, size: int, radius: float | None = None):
        size = _check_size_arg(size)
        self.radius = 3 * size / 8 if radius is None else check_number(
            "radius", radius, low=0.0, fix=f"a radius in pixels, e.g. {3 * size / 8:g} (3/8 of the side)")
        idx = torch.arange(size * size).view(size, size)
        coord = torch.arange(size, dtype=torch.float64) - (size - 1) / 2   # pixel centres, origin in the middle
        inside = coord[:, None] ** 2 + coord[None, :] ** 2 < self.radius ** 2
        super().__init__(torch.where(inside, torch.flip(idx, dims=(0, 1)), idx).reshape(-1), size)

    def __repr__(self):
        return f"InnerCircleView(size={self.size}, radius={self.radius:g})"


class SquareHingeView(PermutationView):
    """Visual anagrams' square-hinge permutation: the image cut into ``blocks x blocks`` squares of side
    ``size // blocks`` (default 3 x 3; the leftover last rows and columns stay put), each square turned a
    quarter turn about its own centre, clockwise where (row + col) is even and counter-clockwise where
    it is odd, as the squares of a hinged dissection turn.  A pixel permutation; the variance goes back
    like the noise."""
    name = "square hinge"

    def __init__(self, size: int, blocks: int = 3):
        size = _check_size_arg(size)
        if not is_int(blocks) or not 1 <= blocks <= size:
            raise ValueError(f"blocks={blocks!r} must be a whole number of squares per side in 1 .. {size}, e.g. 3")
        self.blocks = int(blocks)
        s = size // self.blocks
        idx = torch.arange(size * size).view(size, size)
        for i in range(self.blocks):
            for j in range(self.blocks):
                block = idx[i * s:(i + 1) * s, j * s:(j + 1) * s]
                idx[i * s:(i + 1) * s, j * s:(j + 1) * s] = _cw(block.clone(), 1 if (i + j) % 2 == 0 else -1)
        super().__init__(idx.reshape(-1), size)

    def __repr__(self):
        return f"SquareHingeView(size={self.size}, blocks={self.blocks})"


# --------------------------------------------------------------------------- views that fail

class RotateBilinearFailureView(View):
    """A FAILURE: rotation by ``angle`` degrees (counter-clockwise) with bilinear interpolation, the
    corners that leave the frame filled with 0 (torchvision ``rotate``).  Not a permutation: it
    averages neighbouring pixels (shrinking the variance of noise) and drops the corners.  Its
    ``inverse_view`` (rotation back by -angle, bilinear again, variance channels likewise) is only
    approximate."""
    name = "bilinear rotation (failure)"

    def __init__(self, angle: float = 135.0):
        self.angle = check_number("angle (degrees)", angle, fix="e.g. 135.0")

    def _turn(self, x, angle):
        return TF.rotate(x, angle, interpolation=TF.InterpolationMode.BILINEAR)

    def view(self, x):
        return self._turn(x, self.angle)

    def inverse_view(self, eps):
        return self._turn(eps, -self.angle)

    def __repr__(self):
        return f"RotateBilinearFailureView(angle={self.angle:g})"


class BlurFailureView(View):
    """A FAILURE: the model sees a Gaussian blur of the image (``kernel_size``, ``sigma``; the course's
    lowpass).  Blurred noise is far from N(0, I) (its variance shrinks to about 1 / (4 pi sigma^2)).  A
    blur has no usable inverse: ``inverse_view`` passes the estimate through unchanged (as visual
    anagrams' ``BlurViewFailure`` does), and the variance likewise; a pseudo-inverse at best."""
    name = "blur (failure)"

    def __init__(self, kernel_size: int = 33, sigma: float = 2.0):
        self.kernel_size, self.sigma = check_blur(kernel_size, sigma)

    def view(self, x):
        return TF.gaussian_blur(x, [self.kernel_size] * 2, [self.sigma] * 2)

    def inverse_view(self, eps):
        return eps

    def check_size(self, h, w):
        check_blur(self.kernel_size, self.sigma, size=(h, w))

    def __repr__(self):
        return f"BlurFailureView(kernel_size={self.kernel_size}, sigma={self.sigma:g})"


class ScaleFailureView(View):
    """A FAILURE: a brightness scaling ``view(x) = factor * x``, ``inverse_view(eps) = eps / factor``
    (exact for a power of two such as the default 0.5).  Exactly invertible, yet not orthogonal: scaled
    noise has variance factor^2, not 1.  The variance channels are left alone (the view changes pixel
    values, as ``NegateView`` does)."""
    name = "scale (failure)"

    def __init__(self, factor: float = 0.5):
        factor = check_number("factor", factor, fix="e.g. 0.5")
        if factor in (0.0, 1.0, -1.0):
            raise ValueError(f"factor={factor:g} is not a failure view: 0 is not invertible, and 1 and -1 are "
                             "orthogonal (IdentityView, NegateView); pick e.g. 0.5 or 2.0")
        self.factor = factor

    def view(self, x):
        return self.factor * x

    def inverse_view(self, eps):
        return eps / self.factor

    def inverse_view_variance(self, variance):
        return variance

    def __repr__(self):
        return f"ScaleFailureView(factor={self.factor:g})"


# --------------------------------------------------------------------------- orthogonality

#: The largest image (C * H * W) whose linear map ``orthogonality`` builds whole, on the identity basis.
EXACT_BASIS_LIMIT = 3 * 32 * 32


@dataclass(frozen=True)
class Orthogonality:
    """What ``orthogonality(view)`` measured.

    * ``gram_deviation`` = max |(VB)^T (VB) - B^T B| over the probe basis B (the identity basis: max
      |V^T V - I|, exactly), against ``gram_tolerance`` (float32 rounding of the view itself).
    * ``mean_deviation`` = max_i |mean of view(z)_i| and ``cov_deviation`` = max_ij |Cov(view(z))_ij -
      I_ij| over ``samples`` draws z ~ N(0, I), each against the tolerance an exactly N(0, I) output
      stays within with probability 1 - ``alpha`` (see ``orthogonality``).
    * ``inverse_exact``: ``inverse_view(view(x)) == x`` bit for bit on random images.
    * ``orthogonal``: the map and the noise both within tolerance.  ``usable`` = orthogonal and exactly
      invertible: what an anagram's view needs.
    """
    view: str
    size: tuple
    basis: str
    gram_deviation: float
    gram_tolerance: float
    samples: int
    alpha: float
    mean_deviation: float
    mean_tolerance: float
    cov_deviation: float
    cov_tolerance: float
    inverse_exact: bool

    @property
    def orthogonal(self) -> bool:
        return (self.gram_deviation <= self.gram_tolerance and self.mean_deviation <= self.mean_tolerance
                and self.cov_deviation <= self.cov_tolerance)

    @property
    def usable(self) -> bool:
        return self.orthogonal and self.inverse_exact

    def __str__(self) -> str:
        return (f"{self.view}: max|V^T V - I| {self.gram_deviation:.3g} (tol {self.gram_tolerance:.1e}), noise mean "
                f"{self.mean_deviation:.3f} (tol {self.mean_tolerance:.3f}), max|Cov - I| {self.cov_deviation:.3f} "
                f"(tol {self.cov_tolerance:.3f}), inverse exact {self.inverse_exact}: "
                f"{'orthogonal' if self.orthogonal else 'NOT orthogonal'}")


def orthogonality_table(results: Sequence[Orthogonality]) -> str:
    """The results as a plain-text table, one view per row."""
    head = f"{'view':44s} {'max|VtV-I|':>10s} {'noise mean':>10s} {'max|Cov-I|':>10s} {'exact inv':>9s}  verdict"
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r.view[:44]:44s} {r.gram_deviation:10.3g} {r.mean_deviation:10.3f} {r.cov_deviation:10.3f} "
                    f"{str(r.inverse_exact):>9s}  {'orthogonal' if r.orthogonal else 'NOT orthogonal'}")
    if results:
        r = results[0]
        rows.append(f"tolerances: map {r.gram_tolerance:.1e} (float32 rounding); noise mean {r.mean_tolerance:.3f}, "
                    f"covariance {r.cov_tolerance:.3f} ({r.samples} draws, false alarm <= {r.alpha:g}); {r.basis}")
    return "\n".join(rows)


def noise_tolerances(samples: int, coords: int, alpha: float) -> tuple[float, float]:
    """``(mean, cov)`` tolerances for ``samples`` draws of a ``coords``-dimensional y ~ N(0, I): every
    |mean_i| and every |Cov_ij - I_ij| (second moment about 0) stays within them with probability at
    least 1 - ``alpha``.

    mean_i ~ N(0, 1/S) and P(|N(0,1)| > t) <= 2 exp(-t^2/2): a union over the m coordinates gives
    t = sqrt(2 ln(2m / alpha) / S).  S Cov_ii ~ chi^2_S, and S Cov_ij = (A - B) / 2 with A, B ~ chi^2_S
    independent ((y_i +- y_j)/sqrt 2 are independent N(0, 1)); Laurent & Massart (2000, lemma 1):
    P(|chi^2_S - S| >= 2 sqrt(S x) + 2x) <= 2 exp(-x), so every entry is within 2 sqrt(x/S) + 2x/S
    except with probability 2 m^2 exp(-x) = alpha, x = ln(2 m^2 / alpha).
    """
    s, m = float(samples), float(coords)
    mean_tol = math.sqrt(2 * math.log(2 * m / alpha) / s)
    x = math.log(2 * m * m / alpha)
    return mean_tol, 2 * math.sqrt(x / s) + 2 * x / s


def _gram_deviation(vb: torch.Tensor, basis: torch.Tensor | None) -> float:
    """max |(VB)(VB)^T - BB^T| in float64 (B = I when ``basis`` is None); a sparse product when V B is
    sparse (a permutation of the identity basis has one nonzero per row)."""
    k = vb.shape[0]
    if basis is None and int(torch.count_nonzero(vb)) <= 0.01 * vb.numel():
        s = vb.double().to_sparse()
        with warnings.catch_warnings():                       # torch calls its sparse product "beta"
            warnings.simplefilter("ignore", UserWarning)
            gram = torch.sparse.mm(s, s.t()).coalesce()       # (k, k), sparse
        i, v = gram.indices(), gram.values().clone()
        diag = i[0] == i[1]
        v[diag] -= 1.0
        dev = float(v.abs().max()) if v.numel() else 0.0
        if int(diag.sum()) < k:                               # a missing diagonal entry is |0 - 1|
            dev = max(dev, 1.0)
        return dev
    vbd = vb.double()
    gram = vbd @ vbd.T
    if basis is None:
        gram.diagonal().sub_(1.0)
    else:
        gram -= basis.double() @ basis.double().T
    return float(gram.abs().max())


@torch.no_grad()
def orthogonality(view: View, size: tuple[int, int, int] = (3, 32, 32), generator: torch.Generator | None = None,
                  samples: int = 2048, alpha: float = 1e-6, probes: int | None = None) -> Orthogonality:
    """Whether ``view`` is orthogonal on ``(C, H, W)`` images, by its linear map and by the noise it gives.

    1. The map: V applied to a basis B. With C * H * W <= ``EXACT_BASIS_LIMIT`` (and ``probes`` None),
       B is the identity basis and max |V^T V - I| is exact; else ``probes`` (default 512) random
       orthonormal vectors (QR of a Gaussian matrix), which sees V^T V on a random subspace.  The
       tolerance is float32 rounding: ``formula_bound(1, 64)`` (a permutation or negation gives 0).
    2. The noise: y = view(z) for ``samples`` draws z ~ N(0, I); max |mean| and max |Cov - I| (second
       moments about 0; over the pixels, or over the probe directions B y), against
       ``noise_tolerances(samples, m, alpha)``: an exactly N(0, I) output fails with probability
       below ``alpha``.
    3. ``inverse_exact``: ``torch.equal(inverse_view(view(x)), x)`` on 4 random images.

    ``view.check_size(H, W)`` is called first.  Draws use ``generator`` (default: seed 0), float32 on
    the CPU; the map's products in float64, the noise moments in float32.  Returns an ``Orthogonality``.
    """
    if not (isinstance(size, (tuple, list)) and len(size) == 3 and all(is_int(v) and v > 0 for v in size)):
        raise ValueError(f"size must be (C, H, W) of positive integers, got {size!r}; e.g. (3, 32, 32)")
    if not (callable(getattr(view, "view", None)) and callable(getattr(view, "inverse_view", None))):
        raise TypeError(f"{view!r} is not a view: it needs view(x) and inverse_view(eps) (subclass diffnb.a.views.View)")
    if not is_int(samples) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}; e.g. 2048")
    alpha = check_number("alpha (false-alarm probability)", alpha, fix="e.g. 1e-6")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha (false-alarm probability) must be in (0, 1), got {alpha:g}; e.g. 1e-6")
    c, h, w = (int(v) for v in size)
    if callable(getattr(view, "check_size", None)):
        view.check_size(h, w)
    g = torch.Generator().manual_seed(0) if generator is None else generator
    n = c * h * w

    if probes is None and n <= EXACT_BASIS_LIMIT:
        basis = torch.eye(n)                                  # (n, n): rows e_i
        what = f"map on the identity basis ({n} vectors, exact)"
    else:
        k = 512 if probes is None else probes
        if not is_int(k) or not 1 <= k <= n:
            raise ValueError(f"probes must be an integer in 1 .. {n} (C * H * W), got {k!r}")
        q, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
        basis = q.T.float()                                   # (k, n): orthonormal rows
        what = f"map probed on {k} random orthonormal vectors of {n}"
    vb = view.view(basis.view(-1, c, h, w)).reshape(basis.shape[0], n)   # row i: V b_i
    gram_dev = _gram_deviation(vb, None if basis.shape[0] == n else basis)

    z = torch.randn(samples, c, h, w, generator=g)
    y = view.view(z).reshape(samples, n).float()
    if basis.shape[0] != n:
        y = y @ basis.T                                       # coordinates along the probes: N(0, I_k) if V is orthogonal
    m = y.shape[1]
    mean_dev = float(y.mean(0).abs().max())
    # second moment about 0 (z is centred by construction); float32 rounding (<= S EPS ~ 2e-4) is far inside the tolerance
    cov = y.T @ y / samples
    cov.diagonal().sub_(1.0)
    cov_dev = float(cov.abs().max())
    mean_tol, cov_tol = noise_tolerances(samples, m, alpha)

    x = torch.randn(4, c, h, w, generator=g)
    exact = bool(torch.equal(view.inverse_view(view.view(x)), x))
    return Orthogonality(repr(view), (c, h, w), what, gram_dev, formula_bound(1.0, 64), int(samples), alpha,
                         mean_dev, mean_tol, cov_dev, cov_tol, exact)


def _check_views(views) -> list[View]:
    if isinstance(views, View) or not hasattr(views, "__iter__"):
        raise TypeError(f"views must be a list of views, got {views!r}; e.g. [IdentityView(), FlipView()]")
    views = list(views)
    if not views:
        raise ValueError("give at least one view, e.g. [IdentityView(), FlipView()]")
    for v in views:
        if not (callable(getattr(v, "view", None)) and callable(getattr(v, "inverse_view", None))):
            raise TypeError(f"{v!r} is not a view: it needs view(x) and inverse_view(eps) (subclass diffnb.a.views.View)")
    return views


def check_view_sizes(views: Sequence[View], h: int, w: int) -> None:
    """Every view's ``check_size(h, w)`` (a view without one fits every size), once, before sampling."""
    for v in views:
        check = getattr(v, "check_size", None)
        if callable(check):
            check(h, w)


# --------------------------------------------------------------------------- estimators

def anagram_estimator(stage1, views: Sequence[View], cond_embeds: Sequence[torch.Tensor],
                      uncond_embeds: torch.Tensor, scale: float) -> Estimator:
    """``(x_t, t) -> (eps, variance)``: mean over k of inverse_view_k(CFG eps of prompt k on view_k(x)).

    One UNet call per step on the batch [view_1(x) (uncond), view_1(x) (cond_1), view_2(x) ...].
    ``scale`` (gamma, negative legal) is checked here, once.
    """
    scale = check_scale(scale)
    batch = EmbeddingBatch([e for c in cond_embeds for e in (uncond_embeds, c)])

    def estimate(x, t):
        images = []
        for v in views:
            xv = v.view(x)
            images += [xv, xv]                                # (uncond, cond_k) on view_k(x)
        outs = run_unet(stage1, images, batch, t)
        eps_k, var_k = [], []
        for k, v in enumerate(views):
            (eps_u, _), (eps_c, var_c) = outs[2 * k], outs[2 * k + 1]
            eps_k.append(v.inverse_view(cfg_combine(eps_u, eps_c, scale)))
            var_k.append(v.inverse_view_variance(var_c))
        eps = torch.stack(eps_k).mean(0)                      # eps = (1/K) sum_k V_k^-1(eps_k)  (visual anagrams, Geng et al. 2024)
        return eps, torch.stack(var_k).mean(0)
    return estimate


def hybrid_estimator(stage1, cond_low: torch.Tensor, cond_high: torch.Tensor, uncond_embeds: torch.Tensor,
                     scale: float, kernel_size: int = 33, sigma: float = 2.0) -> Estimator:
    """``(x_t, t) -> (eps, variance)``: lowpass(CFG eps of ``cond_low``) + highpass(CFG eps of ``cond_high``).

    One UNet call per step on [x (uncond), x (cond_low), x (cond_high)] (the unconditional pass is shared).
    The variance is ``cond_low``'s conditional variance. ``scale`` (gamma, negative legal), ``kernel_size``
    and ``sigma`` are checked here, once.  It is the factorized estimator with the ``LowHigh`` split
    (``diffnb.a.decompositions``), the same operations in the same order, so bit for bit the same.
    """
    scale = check_scale(scale)
    kernel_size, sigma = check_blur(kernel_size, sigma)
    # eps = f_low(eps_1) + f_high(eps_2)  (factorized diffusion, Geng et al. 2024)
    return factorized_estimator(stage1, LowHigh(kernel_size, sigma), [cond_low, cond_high], uncond_embeds, scale)


# --------------------------------------------------------------------------- the course's functions

def _start(stage1, timesteps, generator, num_images, height, width):
    """The strided list and the pure noise (``pure_noise`` checks the count, the size and the generator
    before it draws); the estimator is already checked."""
    ts = strided_timesteps(stage1) if timesteps is None else check_timesteps(timesteps, scheduler_of(stage1))
    return ts, pure_noise(stage1, generator, num_images, height, width)


def _loop(stage1, x, ts, est, generator, progress, desc):
    return denoise_loop(x, ts, 0, stage1, est, generator, progress=progress, desc=desc)


def make_anagram(stage1, views: Sequence[View], prompts: Sequence[torch.Tensor], uncond_embeds: torch.Tensor,
                 timesteps: Sequence[int] | None = None, scale: float = 7.0, generator: torch.Generator | None = None,
                 num_images: int = 1, height: int | None = None, width: int | None = None,
                 progress: bool | None = None) -> torch.Tensor:
    """A visual anagram from pure noise: prompt k shows when the image is seen through view k.

    ``prompts`` are embeddings ``(1, L, D)``, one per view; any number of views (each an orthogonal
    ``View``: see ``orthogonality``), all passes of a step in one UNet batch of 2K. ``timesteps`` defaults to
    ``strided_timesteps(stage1)``. Returns the image ``(num_images, C, H, W)``; ``views[k].view(result)``
    is what prompt k should look like. ``scale`` is gamma (negative legal); ``num_images`` >= 1.
    """
    check_bundle(stage1)
    views = _check_views(views)
    prompts = list(prompts)
    if len(prompts) != len(views):
        raise ValueError(f"give one prompt embedding per view: {len(views)} views, {len(prompts)} prompts; pass a "
                         "list with prompt k for views[k] (the same embedding twice is fine)")
    _, h, w = check_sample(stage1, num_images, height, width)
    check_view_sizes(views, h, w)
    where = model_device_dtype(stage1)
    conds = [check_embeds(p, stage1, f"prompts[{k}]", where) for k, p in enumerate(prompts)]
    u = check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    est = anagram_estimator(stage1, views, conds, u, scale)
    ts, x = _start(stage1, timesteps, generator, num_images, height, width)
    return _loop(stage1, x, ts, est, generator, progress, "anagram")


def make_flip_illusion(stage1, prompt1: torch.Tensor, prompt2: torch.Tensor, uncond_embeds: torch.Tensor,
                       timesteps: Sequence[int] | None = None, scale: float = 7.0,
                       generator: torch.Generator | None = None, num_images: int = 1, height: int | None = None,
                       width: int | None = None, progress: bool | None = None) -> torch.Tensor:
    """Section 1.8: ``prompt1`` upright, ``prompt2`` rotated 180 degrees.

    eps = (CFG eps of prompt 1 on x + flip(CFG eps of prompt 2 on flip(x))) / 2; ``scale`` is gamma
    (negative legal). Returns ``(num_images, C, H, W)``; ``FlipView().view(result)`` shows prompt 2.
    """
    return make_anagram(stage1, [IdentityView(), FlipView()], [prompt1, prompt2], uncond_embeds, timesteps, scale,
                        generator, num_images, height, width, progress)


def make_hybrids(stage1, prompt_low: torch.Tensor, prompt_high: torch.Tensor, uncond_embeds: torch.Tensor,
                 timesteps: Sequence[int] | None = None, scale: float = 7.0,
                 generator: torch.Generator | None = None, kernel_size: int = 33, sigma: float = 2.0,
                 num_images: int = 1, height: int | None = None, width: int | None = None,
                 progress: bool | None = None) -> torch.Tensor:
    """Section 1.9: a hybrid image, coarse shapes from ``prompt_low``, fine detail from ``prompt_high``.

    eps = lowpass(eps_low) + highpass(eps_high), lowpass a ``kernel_size`` Gaussian blur with std
    ``sigma``; the variance is ``prompt_low``'s.  ``scale`` is gamma (negative legal); ``num_images`` >= 1.
    Returns ``(num_images, C, H, W)``.
    """
    check_bundle(stage1)
    _, h, w = check_sample(stage1, num_images, height, width)
    kernel_size, sigma = check_blur(kernel_size, sigma, size=(h, w))   # odd, positive, and fits the image
    where = model_device_dtype(stage1)
    c_low = check_embeds(prompt_low, stage1, "prompt_low", where)
    c_high = check_embeds(prompt_high, stage1, "prompt_high", where)
    u = check_embeds(uncond_embeds, stage1, "uncond_embeds", where)
    est = hybrid_estimator(stage1, c_low, c_high, u, scale, kernel_size, sigma)
    ts, x = _start(stage1, timesteps, generator, num_images, height, width)
    return _loop(stage1, x, ts, est, generator, progress, "hybrid")
