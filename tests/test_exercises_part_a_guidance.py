"""Part A's guidance exercises A1.6-A1.9 (``diffnb.exercises.part_a_guidance``): each notebook's solution, as
written in its exercise cell, passes its check with the hidden cases; the stub is "not written"; a call to
diffnb's own function is "used reference"; each plausible mistake (a small edit of the solution) is "wrong"
with the diagnosis that names it; and the references the checks build on agree with diffnb's functions."""
import pytest
import torch

from exercise_cells import exercise_cells, learner
from diffnb.exercises import catalog, evaluate, fixtures
from diffnb.exercises import part_a_guidance as guidance

pytestmark = pytest.mark.usefixtures("one_thread")


NAMES = ["cfg_combine", "iterative_denoise_cfg", "sdedit", "inpaint_project", "make_flip_illusion", "make_hybrids"]


def test_the_catalogue_holds_these_exercises_in_course_order():
    names = list(catalog.exercises())
    assert [n for n in names if n in NAMES] == NAMES
    assert [ex.name for ex in guidance.EXERCISES] == NAMES
    for ex in guidance.EXERCISES:
        assert [n for n, _ in exercise_cells(ex.notebook)].count(ex.name) == 1




USES_REFERENCE = {
    "cfg_combine": "from diffnb.a.denoise import cfg_combine as f\nreturn f(eps_uncond, eps_cond, scale)",
    "iterative_denoise_cfg": "return denoise.iterative_denoise_cfg(im_noisy, i_start, stage1, cond_embeds, "
                             "uncond_embeds, timesteps, scale, generator)",
    "iterative_denoise_cfg/sample_cfg": "return denoise.denoise_loop(im_noisy, timesteps, i_start, stage1, "
                                        "denoise.cfg_estimator(stage1, cond_embeds, uncond_embeds, scale), generator)",
    "sdedit": "return denoise.sdedit(im, i_starts, stage1, cond_embeds, uncond_embeds, timesteps, scale, generator)",
    "inpaint_project": "return reference_inpaint_project(x_prev, prev_t, original, mask, stage1, generator)",
    "make_flip_illusion": "from diffnb.a import views\n"
                          "return views.anagram_estimator(stage1, [views.IdentityView(), views.FlipView()], "
                          "[prompt1, prompt2], uncond, scale)(x_t, t)",
    "make_hybrids": "from diffnb.a import views\n"
                    "return views.hybrid_estimator(stage1, prompt_low, prompt_high, uncond, scale, kernel_size, "
                    "sigma)(x_t, t)",
    "make_hybrids/factorized": "from diffnb.a import decompositions\n"
                               "return decompositions.factorized_estimator(stage1, decompositions.LowHigh(kernel_size, "
                               "sigma), [prompt_low, prompt_high], uncond, scale)(x_t, t)",
}


@pytest.mark.parametrize("case", USES_REFERENCE)
def test_calling_diffnb_s_own_function_is_refused(case):
    name = case.split("/")[0]
    imports = [("from diffnb.a import denoise", "from diffnb.a import denoise\n"
                "from diffnb.exercises.part_a_guidance import reference_inpaint_project")] \
        if name == "inpaint_project" else []          # the projection's reference is the exercise module's
    result = evaluate(catalog.get(name), learner(name, imports, body=USES_REFERENCE[case]))
    assert result.status == "used reference", result.message


def test_importing_the_reference_by_name_is_refused():
    ns: dict = {}
    exec("from diffnb.exercises.part_a_guidance import reference_inpaint_project as inpaint_project\n", ns)
    result = evaluate(catalog.get("inpaint_project"), ns["inpaint_project"])
    assert result.status == "used reference", result.message


LOOP = "range(i_start, len(timesteps) - 1)"
UNCOND = "eps_u, _ = denoise.estimate_noise(stage1, x, t, uncond_embeds)"
COND = "eps_c, variance = denoise.estimate_noise(stage1, x, t, cond_embeds)"
FORWARD = "denoise.forward(im, timesteps[i_start], stage1, generator)"
DENOISE = "denoise.iterative_denoise_cfg(x_t, i_start, stage1, cond_embeds, uncond_embeds, timesteps, scale,"
KNOWN = "known = original if prev_t == 0 else denoise.forward(original, prev_t, stage1, generator)"
RUN4 = "[uncond, prompt1, uncond, prompt2]"

#: (exercise, what the mistake is, edits of the notebook's solution, words the diagnosis must contain)
MISTAKES = [
    ("cfg_combine", "the two estimates swapped",
     [("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_cond + scale * (eps_uncond - eps_cond)")],
     "the two estimates are swapped"),
    ("cfg_combine", "γ applied to ε_c alone",
     [("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_uncond + scale * eps_cond")],
     "you applied γ to ε_c alone"),
    ("cfg_combine", "the guidance's sign flipped",
     [("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_uncond - scale * (eps_cond - eps_uncond)")],
     "the sign of the guidance is flipped"),
    ("cfg_combine", "(γ − 1) for (1 − γ)",
     [("eps_uncond + scale * (eps_cond - eps_uncond)", "(scale - 1) * eps_uncond + scale * eps_cond")],
     "(γ − 1) instead of (1 − γ)"),
    ("cfg_combine", "no guidance at all", [("eps_uncond + scale * (eps_cond - eps_uncond)", "eps_cond")],
     "ε_c alone, without guidance"),
    ("cfg_combine", "γ fixed at 7", [("eps_uncond + scale * (eps_cond - eps_uncond)",
                                      "eps_uncond + 7.0 * (eps_cond - eps_uncond)")],
     "you used γ = 7 whatever the scale"),
    ("iterative_denoise_cfg", "the unconditional variance",
     [(UNCOND, "eps_u, variance = denoise.estimate_noise(stage1, x, t, uncond_embeds)"),
      (COND, "eps_c, _ = denoise.estimate_noise(stage1, x, t, cond_embeds)")],
     "unconditional branch's variance"),
    ("iterative_denoise_cfg", "the scale ignored",
     [("cfg_combine(eps_u, eps_c, scale)", "cfg_combine(eps_u, eps_c, 7.0)")],
     "your loop ignores scale: called with γ = 3, it gives CFG with γ = 7"),
    ("iterative_denoise_cfg", "no guidance", [("eps = cfg_combine(eps_u, eps_c, scale)", "eps = eps_c")],
     "your loop gives the plain conditional estimate ε_c (CFG with γ = 1), not CFG with γ = 7"),
    ("iterative_denoise_cfg", "the estimates swapped in cfg_combine",
     [("cfg_combine(eps_u, eps_c, scale)", "cfg_combine(eps_c, eps_u, scale)")], "the two estimates swapped"),
    ("iterative_denoise_cfg", "one step short", [(LOOP, "range(i_start, len(timesteps) - 2)")],
     "your loop stops one step early: it returns the image at t = 330"),
    ("iterative_denoise_cfg", "the first step skipped", [(LOOP, "range(i_start + 1, len(timesteps) - 1)")],
     "your loop skips the first step"),
    ("iterative_denoise_cfg", "i_start ignored", [(LOOP, "range(0, len(timesteps) - 1)")],
     "your loop starts at index 0 (t = 690), not at i_start = 1"),
    ("iterative_denoise_cfg", "the UNet asked at t'",
     [(UNCOND, UNCOND.replace(", t,", ", prev_t,")), (COND, COND.replace(", t,", ", prev_t,"))],
     "asks the UNet at t' = timesteps[i + 1]"),
    ("sdedit", "denoised from index 0", [(DENOISE, DENOISE.replace("x_t, i_start,", "x_t, 0,"))],
     "you denoised from index 0 (t = 990) an image noised to timesteps[1] = 660"),
    ("sdedit", "not noised", [(FORWARD, "im")], "you forgot to noise the image"),
    ("sdedit", "noised to the index", [(FORWARD, "denoise.forward(im, i_start, stage1, generator)")],
     "you noised the image to t = 1 (the index) instead of t = timesteps[1] = 660"),
    ("sdedit", "noised to the next entry", [(FORWARD, "denoise.forward(im, timesteps[i_start + 1], stage1, generator)")],
     "you noised the image to t = timesteps[2] = 330 (the next entry)"),
    ("sdedit", "all the noise drawn first",
     [("    for i_start in i_starts:\n        x_t = " + FORWARD,
       "    noisy = [" + FORWARD + " for i_start in i_starts]\n    for i_start, x_t in zip(i_starts, noisy):\n"
       "        pass")],
     "you drew the noise for every start index first"),
    ("sdedit", "the scale left out",
     [(DENOISE + "\n                                                generator)",
       "denoise.iterative_denoise_cfg(x_t, i_start, stage1, cond_embeds, uncond_embeds, timesteps, generator=generator)")],
     "your edits ran with γ = 7, not the scale 3"),
    ("sdedit", "one tensor instead of a list",
     [("return edits", "return torch.cat(edits)"),
      ("from diffnb.a import denoise", "import torch\nfrom diffnb.a import denoise")],
     "return a list with one (N, C, H, W) edit per start index"),
    ("inpaint_project", "the mask inverted",
     [("return mask * x_prev + (1 - mask) * known", "return (1 - mask) * x_prev + mask * known")],
     "your mask is inverted"),
    ("inpaint_project", "the original not noised", [(KNOWN, "known = original")],
     "outside the mask your result is the clean original at t' = 660"),
    ("inpaint_project", "noised at t' = 0 too", [(KNOWN, "known = denoise.forward(original, prev_t, stage1, generator)")],
     "at t' = 0 (the last step) the kept pixels must be the original itself"),
    ("inpaint_project", "noised at the step's t instead of t'",
     [(KNOWN, KNOWN.replace("denoise.forward(original, prev_t,", "denoise.forward(original, prev_t + 30,"))],
     "outside the mask your result is the original noised to t ≈ 690"),
    ("inpaint_project", "the noise not from the generator",
     [(KNOWN, KNOWN.replace("stage1, generator)", "stage1)"))],
     "but other noise"),
    ("inpaint_project", "(1 − m) left out",
     [("return mask * x_prev + (1 - mask) * known", "return mask * x_prev + known")],
     "where the mask is 1 (edit) your result should be x_prev"),
    ("make_flip_illusion", "the second estimate not turned back",
     [("eps = (eps_1 + flip(eps_2)) / 2", "eps = (eps_1 + eps_2) / 2")], "the second estimate is not turned back"),
    ("make_flip_illusion", "flipped left-right", [("dims=(-2, -1))  ", "dims=(-1,))  ")],
     "you flipped left-right"),
    ("make_flip_illusion", "the sum, not the mean", [("eps = (eps_1 + flip(eps_2)) / 2", "eps = eps_1 + flip(eps_2)")],
     "the sum of the two views' estimates"),
    ("make_flip_illusion", "the prompts swapped", [(RUN4, "[uncond, prompt2, uncond, prompt1]")],
     "the prompts are swapped"),
    ("make_flip_illusion", "the upright variance alone", [("variance = (var_1 + flip(var_2)) / 2", "variance = var_1")],
     "your variance is the upright view's alone"),
    ("make_flip_illusion", "eps alone returned", [("return eps, variance", "return eps")],
     "returned a Tensor; return the pair (eps, variance)"),
    ("make_hybrids", "low and high swapped", [("eps = f_low(eps_1) + (eps_2 - f_low(eps_2))",
                                               "eps = f_low(eps_2) + (eps_1 - f_low(eps_1))")],
     "low and high are swapped"),
    ("make_hybrids", "the high-pass without x − blur", [("eps = f_low(eps_1) + (eps_2 - f_low(eps_2))",
                                                         "eps = f_low(eps_1) + eps_2")],
     "you added prompt_high's estimate whole"),
    ("make_hybrids", "the high-pass as a blur", [("eps = f_low(eps_1) + (eps_2 - f_low(eps_2))",
                                                  "eps = f_low(eps_1) + f_low(eps_2)")],
     "you blurred prompt_high's estimate too"),
    ("make_hybrids", "the low-pass only", [("eps = f_low(eps_1) + (eps_2 - f_low(eps_2))", "eps = f_low(eps_1)")],
     "the low-pass piece only"),
    ("make_hybrids", "prompt_high's variance", [("(eps_u, _), (eps_low, var_low), (eps_high, _)",
                                                 "(eps_u, _), (eps_low, _), (eps_high, var_low)")],
     "your variance is prompt_high's"),
    ("make_hybrids", "the blur's size ignored", [("[kernel_size, kernel_size], [sigma, sigma]", "[33, 33], [2.0, 2.0]")],
     "you blurred with the defaults (33 × 33, σ = 2), not kernel_size = 9, sigma = 1"),
]


@pytest.mark.parametrize("name, what, edits, words", MISTAKES, ids=[f"{m[0]}: {m[1]}" for m in MISTAKES])
def test_each_mistake_is_wrong_with_its_diagnosis(name, what, edits, words):
    result = evaluate(catalog.get(name), learner(name, edits))
    assert result.status == "wrong", f"{what}: {result.status}, {result.message}"
    assert words in result.message, f"{what}: {result.message}"


def test_the_catalogue_is_large_enough():
    assert len(MISTAKES) >= 12
    assert {m[0] for m in MISTAKES} == set(NAMES)


# --------------------------------------------------------------------------- the references behind the checks

@torch.no_grad()
def test_inpaint_equals_the_loop_with_the_reference_projection():
    """diffnb's ``inpaint`` is its CFG loop from pure noise with ``reference_inpaint_project`` after every step,
    to the bit, so the check's reference cannot drift from the package."""
    from diffnb.a import denoise as ddpm
    s, u, c = fixtures.stage1(), fixtures.embed(""), fixtures.embed(guidance.P7)
    original = fixtures.clean_images(2, 3)
    mask = guidance._masks("per image", 2)
    ts = [990, 660, 330, 0]
    expected = ddpm.inpaint(original, mask, s, c, u, ts, 7.0, fixtures.generator(9))
    g = fixtures.generator(9)
    x = ddpm.denoise_loop(ddpm.pure_noise(s, g, 2), ts, 0, s, ddpm.cfg_estimator(s, c, u, 7.0), g,
                          project=lambda x_prev, prev_t: guidance.reference_inpaint_project(x_prev, prev_t, original,
                                                                                            mask, s, g))
    assert torch.equal(x, expected)
    keep = (mask == 0).expand_as(original)
    assert torch.equal(x[keep], original[keep])


@torch.no_grad()
def test_the_mistakes_are_computed_from_diffnb_s_own_path():
    """With no mistake switched on, the hints' loop and SDEdit give diffnb's results to the bit."""
    from diffnb.a import denoise as ddpm
    s, u, c = fixtures.stage1(), fixtures.embed(""), fixtures.embed(guidance.P4)
    ts = [690, 490, 290, 90, 0]
    x = ddpm.forward(fixtures.clean_images(2, 1), ts[1], s, fixtures.generator(1))
    assert torch.equal(guidance.cfg_loop(x, ts, range(1, len(ts) - 1), s, c, u, 3.0, fixtures.generator(5)),
                       ddpm.iterative_denoise_cfg(x, 1, s, c, u, ts, 3.0, fixtures.generator(5)))
    im = fixtures.clean_images(1, 0)
    mine = guidance.sdedit_variant(im, [1, 2], s, c, u, ts, 7.0, 4)
    theirs = ddpm.sdedit(im, [1, 2], s, c, u, ts, 7.0, fixtures.generator(4))
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


@torch.no_grad()
def test_the_estimate_references_are_diffnb_s_estimators():
    from diffnb.a import views
    s, u = fixtures.stage1(), fixtures.embed("")
    e1, e2 = fixtures.embed(guidance.PAIRS[0][0]), fixtures.embed(guidance.PAIRS[0][1])
    x = torch.randn(2, 3, 32, 32, generator=fixtures.generator(0))
    eps, var = guidance.reference_anagram_estimate(s, x, 500, e1, e2, u, 7.0)
    eps_c, var_c = views.anagram_estimator(s, [views.IdentityView(), views.FlipView()], [e1, e2], u, 7.0)(x, 500)
    assert torch.equal(eps, eps_c) and torch.equal(var, var_c)
    eps, var = guidance.reference_hybrid_estimate(s, x, 500, e1, e2, u, 7.0, 9, 1.0)
    eps_c, var_c = views.hybrid_estimator(s, e1, e2, u, 7.0, 9, 1.0)(x, 500)
    assert torch.equal(eps, eps_c) and torch.equal(var, var_c)

