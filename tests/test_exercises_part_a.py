"""Part A's exercises A1.1-A1.4 (``diffnb.exercises.part_a``): each notebook's solution, as written in its
exercise cell, passes its check with the hidden cases; the stub is "not written"; a call to diffnb's own
function is "used reference"; and each plausible mistake (a small edit of the solution) is "wrong" with
the diagnosis that names it."""
import pytest
import torch

from exercise_cells import learner
from diffnb.exercises import catalog, evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


NAMES = ["forward", "blur_denoise", "one_step_denoise", "ddpm_step", "iterative_denoise"]




USES_REFERENCE = {
    "forward": "from diffnb.a.denoise import forward as f\nreturn f(im, t, stage1, generator)",
    "blur_denoise": "from diffnb.a import denoise\nreturn denoise.blur_denoise(im, kernel_size, sigma)",
    "one_step_denoise": "from diffnb.a import denoise\n"
                        "return denoise.one_step_denoise(stage1, im_noisy, t, prompt_embeds)",
    "one_step_denoise/predict_x0": "from diffnb.a import denoise\n"
                                   "eps, _ = denoise.estimate_noise(stage1, im_noisy, t, prompt_embeds)\n"
                                   "return denoise.predict_x0(im_noisy, eps, t, stage1)",
    "ddpm_step": "return denoise.ddpm_step(x_t, eps, variance, t, prev_t, stage1, generator)",
    "iterative_denoise": "return denoise.iterative_denoise(im_noisy, i_start, stage1, prompt_embeds, timesteps, "
                         "generator)",
    "iterative_denoise/denoise_loop": "return denoise.denoise_loop(im_noisy, timesteps, i_start, stage1, "
                                      "denoise.plain_estimator(stage1, prompt_embeds), generator)",
}


@pytest.mark.parametrize("case", USES_REFERENCE)
def test_calling_diffnb_s_own_function_is_refused(case):
    name = case.split("/")[0]
    result = evaluate(catalog.get(name), learner(name, body=USES_REFERENCE[case]))
    assert result.status == "used reference", result.message


def test_importing_the_reference_by_name_is_refused():
    ns: dict = {}
    exec("from diffnb.a.denoise import ddpm_step\n", ns)
    result = evaluate(catalog.get("ddpm_step"), ns["ddpm_step"])
    assert result.status == "used reference", result.message


X0_HAT = "(x_t - (1 - abar).sqrt() * eps) / abar.sqrt()"
MEAN = "abar_prev.sqrt() * beta / (1 - abar) * x0_hat + alpha.sqrt() * (1 - abar_prev) / (1 - abar) * x_t"
LOOP = "range(i_start, len(timesteps) - 1)"

#: (exercise, what the mistake is, edits of the notebook's solution, words the diagnosis must contain)
MISTAKES = [
    ("forward", "ᾱ_t where √ᾱ_t belongs", [("abar.sqrt() * im", "abar * im")],
     "scales x_0 by 0.846 at t = 250; expected √ᾱ_t = 0.920: did you leave out the square root"),
    ("forward", "the noise weight without its square root", [("(1 - abar).sqrt() * eps", "(1 - abar) * eps")],
     "the noise in your x_t has std 0.15 at t = 250; expected √(1−ᾱ_t) = 0.39: did you leave out the square root"),
    ("forward", "the two weights swapped", [("abar.sqrt() * im + (1 - abar).sqrt() * eps",
                                             "(1 - abar).sqrt() * im + abar.sqrt() * eps")],
     "the two weights are swapped"),
    ("forward", "the noise not from the generator", [("torch.randn(im.shape, generator=generator)",
                                                      "torch.randn(im.shape)")],
     "but other noise: draw ε with torch.randn(im.shape, generator=generator)"),
    ("forward", "alphas instead of alphas_cumprod", [("alphas_cumprod[t]", "alphas[t]")],
     "did you read scheduler.alphas[t]"),
    ("blur_denoise", "blurs one axis only", [("[kernel_size, kernel_size]", "[kernel_size, 1]")],
     "smooths along the width only"),
    ("blur_denoise", "a fixed kernel size", [("[kernel_size, kernel_size]", "[5, 5]")],
     "kernel is 5 × 5 with σ = 0.5; expected kernel_size = 3, sigma = 0.5: use the arguments"),
    ("blur_denoise", "a fixed σ", [("[sigma, sigma]", "[2.0, 2.0]")],
     "kernel is 3 × 3 with σ = 2.0; expected kernel_size = 3, sigma = 0.5: use the arguments"),
    ("blur_denoise", "kernel_size taken as a radius", [("[kernel_size, kernel_size]",
                                                        "[2 * kernel_size + 1, 2 * kernel_size + 1]")],
     "kernel is 11 × 11 with σ = 2.0; expected kernel_size = 5"),
    ("blur_denoise", "the variance σ² passed as sigma", [("[sigma, sigma]", "[sigma ** 2, sigma ** 2]")],
     "your blur's σ is 4; expected sigma = 2.0: did you pass the variance σ²"),
    ("blur_denoise", "a hand-made kernel with zero padding",
     [("    return TF.gaussian_blur(im, [kernel_size, kernel_size], [sigma, sigma])\n",
       "    import torch\n"
       "    u = torch.arange(kernel_size) - kernel_size // 2\n"
       "    g = torch.exp(-u ** 2 / (2 * sigma ** 2))\n"
       "    g = g / g.sum()\n"
       "    w = (g[:, None] * g[None, :]).expand(im.shape[1], 1, kernel_size, kernel_size)\n"
       "    return torch.nn.functional.conv2d(im, w, padding=kernel_size // 2, groups=im.shape[1])\n")],
     "you padded with zeros"),
    ("one_step_denoise", "ᾱ_t instead of √ᾱ_t", [("/ abar.sqrt()", "/ abar")],
     "you divided by ᾱ_t = 0.846; divide by √ᾱ_t = 0.920: did you leave out the square root"),
    ("one_step_denoise", "the noise term added", [("im_noisy - (1 - abar)", "im_noisy + (1 - abar)")],
     "adds the noise term √(1−ᾱ_t) ε̂; subtract it"),
    ("one_step_denoise", "divided by √(1−ᾱ_t)", [("/ abar.sqrt()", "/ (1 - abar).sqrt()")],
     "you divided by √(1−ᾱ_t) = 0.393; divide by √ᾱ_t = 0.920"),
    ("one_step_denoise", "the noise weight without its square root", [("(1 - abar).sqrt() * eps", "(1 - abar) * eps")],
     "your noise term is (1−ᾱ_t) ε̂ = 0.154 ε̂; expected √(1−ᾱ_t) ε̂ = 0.393 ε̂"),
    ("one_step_denoise", "the noise estimate returned", [("return (im_noisy - (1 - abar).sqrt() * eps) / abar.sqrt()",
                                                          "return eps")],
     "your x̂₀ is the noise estimate ε̂ itself"),
    ("one_step_denoise", "x̂₀ clipped", [("return (im_noisy - (1 - abar).sqrt() * eps) / abar.sqrt()",
                                          "return ((im_noisy - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)")],
     "your x̂₀ is clipped"),
    ("one_step_denoise", "alphas instead of alphas_cumprod", [("alphas_cumprod[t]", "alphas[t]")],
     "your x̂₀ divides by 0.999; expected √ᾱ_t = 0.920: did you read scheduler.alphas[t]"),
    ("ddpm_step", "α_t read as alphas[t]", [("alpha = abar / abar_prev", "alpha = stage1.scheduler.alphas[t]")],
     "your step takes α_t = scheduler.alphas[690]"),
    ("ddpm_step", "the posterior coefficients swapped",
     [(MEAN, "alpha.sqrt() * (1 - abar_prev) / (1 - abar) * x0_hat + abar_prev.sqrt() * beta / (1 - abar) * x_t")],
     "your posterior mean has its two coefficients swapped"),
    ("ddpm_step", "no clipping", [(f"denoise.clip_x0({X0_HAT}, stage1)", X0_HAT)],
     "your x̂₀ is not clipped: pass it through denoise.clip_x0"),
    ("ddpm_step", "clamped instead of thresholded", [(f"denoise.clip_x0({X0_HAT}, stage1)", f"({X0_HAT}).clamp(-1, 1)")],
     "you clamped x̂₀ to [-1, 1]; IF's scheduler asks for dynamic thresholding"),
    ("ddpm_step", "the variance not added",
     [("return denoise.add_variance(variance, t, mean, stage1, generator, prev_t=prev_t)", "return mean")],
     "your x_{t'} is the posterior mean μ̃ alone"),
    ("ddpm_step", "ᾱ_t' read at t − 1", [("alphas_cumprod[[t, prev_t]]", "alphas_cumprod[[t, t - 1]]")],
     "you read ᾱ_t' at t − 1 = 689; this step goes to prev_t = 660"),
    ("ddpm_step", "the generator not passed on", [("stage1, generator, prev_t=prev_t)", "stage1, prev_t=prev_t)")],
     "pass generator to denoise.add_variance"),
    ("ddpm_step", "add_variance without prev_t", [(", prev_t=prev_t)", ")")],
     "your noise σ_t z is that of the step 540 → 510 (add_variance's default)"),
    ("iterative_denoise", "stops one step early", [(LOOP, "range(i_start, len(timesteps) - 2)")],
     "your loop stops one step early, at t = 90 instead of 0"),
    ("iterative_denoise", "starts at i_start + 1", [(LOOP, "range(i_start + 1, len(timesteps) - 1)")],
     "your loop starts at timesteps[i_start + 1] = 240"),
    ("iterative_denoise", "the generator ignored", [("stage1, generator)", "stage1)")],
     "your result changes between two runs with the same generator seed"),
    ("iterative_denoise", "the steps in the wrong order", [(LOOP, f"reversed({LOOP})")],
     "your loop runs the steps in the wrong order (first 90 → 0)"),
    ("iterative_denoise", "the noise of im_noisy at every step",
     [("estimate_noise(stage1, x, t", "estimate_noise(stage1, im_noisy, t")],
     "your loop estimates the noise of im_noisy at every step"),
]


@pytest.mark.parametrize("name, mistake, edits, words", MISTAKES, ids=[f"{m[0]}: {m[1]}" for m in MISTAKES])
def test_a_mistake_gets_its_diagnosis(name, mistake, edits, words):
    torch.manual_seed(0)                                      # "not from the generator" draws from the global RNG
    result = evaluate(catalog.get(name), learner(name, edits))
    assert result.status == "wrong", (mistake, result.status, result.message)
    assert words in result.message, (mistake, result.message)


def test_the_catalogue_covers_every_exercise():
    assert {m[0] for m in MISTAKES} == set(NAMES)
    assert len(MISTAKES) >= 12 + 5
