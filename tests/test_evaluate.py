"""The section figures: the scoring functions on inputs whose answer is known, and the command line."""
import json
import math
import re

import pytest
import torch

from diffnb import evaluate
from diffnb.mini.judge import get_world_judge
from diffnb.b.judge import Reading


@pytest.fixture(scope="module")
def judge():
    return get_world_judge(device="cpu")


@pytest.fixture(scope="module")
def renders():
    return evaluate.world_images(20)


def test_far_view_keeps_flat_images_and_removes_fine_detail():
    flat = torch.full((1, 3, 32, 32), 0.3)
    torch.testing.assert_close(evaluate.far_view(flat), flat)
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0     # +-1, period 2
    far = evaluate.far_view(checker.expand(1, 3, 32, 32))
    assert far.abs().max() < 1e-6                                                      # 4x4 means are 0


def test_sdedit_scores_an_untouched_input_and_pure_noise(judge, renders):
    x0, digits, _ = renders
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    rows = evaluate.score_sdedit(judge, [x0, noise], x0, digits, [20, 1], list(range(990, -1, -30)))
    same, lost = rows
    assert same["distance"] == 0 and same["digit_kept"] >= 0.9 and same["t"] == 390
    assert lost["distance"] > 0.3 and lost["digit_kept"] <= 0.2 and lost["t"] == 960


def test_inpaint_score_checks_every_kept_pixel(judge, renders):
    x0, digits, _ = renders
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :] = 1
    result = torch.where(mask.bool(), torch.zeros_like(x0), x0)
    assert evaluate.score_inpaint(judge, result, x0, mask, digits)["unmasked_exact"] is True
    result[3, 1, 20, 5] += 0.01                                                        # one kept pixel off
    assert evaluate.score_inpaint(judge, result, x0, mask, digits)["unmasked_exact"] is False


class _DetailJudge:
    """Reads 0 in an image with pixel-scale detail and 1 in a smooth one (what ``predict`` returns)."""

    def predict(self, x):
        detail = (x[..., 1:] - x[..., :-1]).abs().flatten(1).mean(1)
        digit = (detail < 0.1).long()
        return Reading(digit, None, torch.zeros_like(digit), None)


def test_hybrid_score_reads_the_far_view_and_the_full_image():
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2.0 - 1.0
    images = torch.stack([checker.expand(3, 32, 32), torch.full((3, 32, 32), 0.2)])   # detail, smooth
    r = evaluate.score_hybrid(_DetailJudge(), images, 1, 0)      # far: smooth (1); near: detail (0)
    assert r["ok"].tolist() == [True, False]                     # only the checkerboard is both
    assert (r["far"], r["near"], r["success"]) == (1.0, 0.5, 0.5)
    swapped = evaluate.score_hybrid(_DetailJudge(), images, 0, 1)
    assert swapped["success"] == 0 and swapped["far"] == 0 and swapped["near"] == 0.5


def test_prompts_without_a_digit_cannot_be_judged():
    with pytest.raises(ValueError, match="must name digits"):
        evaluate.anagram_score(None, None, None, "a photo", "a photo of the digit 3", 2, [990, 0], 7.0, 0)
    with pytest.raises(ValueError, match="must name digits"):
        evaluate.hybrid_score(None, None, None, "a photo of the digit 3", "a pencil sketch", 2, [990, 0], 7.0, 0)


def test_the_command_line_writes_the_figures(tmp_path, one_thread):
    out = tmp_path / "figures.json"
    assert evaluate.main(["--n", "2", "--sections", "1.7.2,1.7.3", "--device", "cpu", "--out", str(out),
                          "--page-dir", str(tmp_path / "page")]) == 0
    figures = json.loads(out.read_text())
    inpaint, from_photos, from_sketches = figures
    assert inpaint.startswith("1.7.2") and figures[inpaint]["unmasked_exact"] is True
    assert 0 <= figures[inpaint]["digit_kept"] <= 1
    assert from_photos.startswith("1.7.3 photo") and from_sketches.startswith("1.7.3 pencil sketch")
    assert [r["i_start"] for r in figures[from_sketches]] == [1, 3, 5, 7, 10, 20]
    assert all(r["both"] <= min(r["crayon"], r["digit_kept"]) for r in figures[from_sketches])
    page = (tmp_path / "page" / "results.md").read_text()
    assert "## 1.7.2 · Inpainting" in page and "## 1.7.3 · " in page and "## 1.8" not in page
    assert "| top half | yes | " in page


# --------------------------------------------------------------------------- the results page

FIGURES = {     # hand-made, in the form main keeps them; out of order on purpose
    "1.8": [dict(label="a photo of the digit 7 / a photo of the digit 2", n=20, success=0.65, upright=1.0,
                 rotated=0.65, baseline=0.05)],
    "1.7.2": [dict(label="top <half> & 'more'", n=20, unmasked_exact=True, digit_kept=0.9)],
    "1.4": [dict(n=20, i_start=5, t=840, noisy=1.31, iterative=0.085, one_step=0.049, blur=0.42),
            dict(n=20, i_start=20, t=390, noisy=0.36, iterative=0.012, one_step=0.007, blur=0.05)],
}
META = dict(command="python -m diffnb.evaluate --n 20 --page-dir <here>", n=20, seed=0, device="cpu",
            sections=["1.4", "1.7.2", "1.8"], judge_digit=0.9943, judge_style=1.0, seconds=123.4,
            date="2025-01-02 03:04")


def _se(p, n):
    """The binomial standard error in percentage points, as the page prints it."""
    return f"{100 * math.sqrt(p * (1 - p) / n):.1f}"


def test_the_results_page_shows_each_section_with_its_figures(tmp_path):
    md_path, html_path = evaluate.write_results_page(FIGURES, META, tmp_path / "new")
    assert (md_path, html_path) == (tmp_path / "new" / "results.md", tmp_path / "new" / "results.html")
    md, page = md_path.read_text(), html_path.read_text()
    assert _se(0.65, 20) == "10.7" and _se(0.05, 20) == "4.9"                # the closed form, by hand
    assert ("| a photo of the digit 7 / a photo of the digit 2 | 65% ± 10.7 | 100% ± 0.0 | 65% ± 10.7 | 5% ± 4.9 | 20 |"
            in md)
    assert "| upright prompt / rotated prompt | both views right | upright right | rotated right | baseline | n |" in md
    assert "| 5 | 840 | 1.31 | 0.085 | 0.049 | 0.42 | 20 |" in md
    assert "| 20 | 390 | 0.36 | 0.012 | 0.007 | 0.05 | 20 |" in md
    assert "| top <half> & 'more' | yes | 90% ± 6.7 | 20 |" in md
    # the sections in the notebooks' order, each naming its notebook; none that did not run
    heads = re.findall(r"^## (\S+) · ", md, re.M)
    assert heads == ["1.4", "1.7.2", "1.8"]
    for text in (md, page):
        for notebook in ("A1.4_iterative.ipynb", "A1.7_image_to_image.ipynb", "A1.8_visual_anagrams.ipynb"):
            assert notebook in text
        assert "A1.9_hybrids" not in text and "A1.6_cfg" not in text
        assert "seed 0, device cpu" in text and "digit accuracy 99.4%" in text and "took 123 s" in text
    # HTML: one table per section, the figures in cells, the text escaped
    assert page.count("<table>") == 3 and page.count("<tr>") == 3 + 4
    assert '<td class="num">65% ± 10.7</td>' in page
    assert "<td>a photo of the digit 7 / a photo of the digit 2</td>" in page
    assert "<td>top &lt;half&gt; &amp; 'more'</td>" in page and "<half>" not in page
    assert "--page-dir &lt;here&gt;" in page and "<here>" not in page
    assert "<link" not in page and "<script" not in page and "<style>" in page          # self-contained
    # every percentage and decimal on the page comes from the figures (with their errors) or the meta; the
    # others are section numbers (notebooks, A1.4, are not read as numbers)
    rates = [(0.65, 20), (1.0, 20), (0.05, 20), (0.9, 20)]
    allowed = ({f"{p:.0%}" for p, _ in rates} | {_se(p, n) for p, n in rates} | {"99.4%", "100.0%"}
               | {f"{v:g}" for r in FIGURES["1.4"] for k, v in r.items() if isinstance(v, float)}
               | set(evaluate.SECTIONS))
    for text in (md, re.sub(r"<style>.*?</style>", "", page, flags=re.S)):
        found = {t for t in re.findall(r"(?<![\w.])\d+(?:\.\d+)*%?", text) if "." in t or "%" in t}
        assert found <= allowed, found - allowed


def test_the_results_page_goes_into_the_pack_folder_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNB_BUILD", str(tmp_path / "build"))
    paths = evaluate.write_results_page(FIGURES, META)
    assert paths == (tmp_path / "build" / "pack" / "results.md", tmp_path / "build" / "pack" / "results.html")
    assert all(p.is_file() for p in paths)


def test_the_page_dir_must_be_a_folder(tmp_path, capsys):
    afile = tmp_path / "results.html"
    afile.write_text("not a folder")
    for bad, words in ((afile, "is a file"), (afile / "sub", "lies under .*results.html', which is a file")):
        with pytest.raises(SystemExit) as stopped:
            evaluate.main(["--n", "2", "--page-dir", str(bad)])
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert re.search(rf"--page-dir: '.*' {words}; give a folder for results.md and results.html \(made if "
                         r"missing\), or leave out --page-dir to write them into build/pack/", err), err


def test_a_cheap_run_writes_the_page_with_the_printed_figures(tmp_path, one_thread, capsys):
    assert evaluate.main(["--n", "2", "--sections", "1.8", "--device", "cpu", "--page-dir", str(tmp_path)]) == 0
    printed = re.findall(r"^1\.8 anagram '(.+)' / '(.+)': (\{.*\})$", capsys.readouterr().out, re.M)
    assert len(printed) == 3                                                     # the profile's three pairs
    md, page = (tmp_path / "results.md").read_text(), (tmp_path / "results.html").read_text()
    assert re.findall(r"^## (\S+) · ", md, re.M) == ["1.8"] and "A1.8_visual_anagrams.ipynb" in page
    for p1, p2, values in printed:
        v = json.loads(values)
        cells = " | ".join(f"{v[k]:.0%} ± {_se(v[k], 2)}" for k in ("success", "upright", "rotated", "baseline"))
        assert f"| {p1} / {p2} | {cells} | 2 |" in md
        assert f"<td>{p1} / {p2}</td>" in page
    assert "`python -m diffnb.evaluate --n 2 --sections 1.8 --device cpu --page-dir " in md


class _TopJudge:
    """Reads 1 where the top half is brighter than the bottom half, else 0: turning an image by 180°
    turns its reading over."""

    def predict(self, x):
        h = x.shape[-2] // 2
        digit = (x[..., :h, :].mean((1, 2, 3)) > x[..., h:, :].mean((1, 2, 3))).long()
        return Reading(digit, None, torch.zeros_like(digit), None)


def test_read_anagram_needs_both_views_right():
    top = torch.zeros(1, 3, 32, 32)
    top[..., :16, :] = 1                                          # bright top: 1 upright, 0 rotated
    images = torch.cat([top, top.flip(-2)])                       # the second is bright at the bottom
    both = evaluate.read_anagram(_TopJudge(), images, "a photo of the digit 1", "a photo of the digit 0")
    assert both["ok"].tolist() == [True, False]
    assert (both["success"], both["upright"], both["rotated"]) == (0.5, 0.5, 0.5)
    same = evaluate.read_anagram(_TopJudge(), images, "a photo of the digit 1", "a photo of the digit 1")
    assert same["success"] == 0 and same["upright"] == 0.5 and same["rotated"] == 0.5   # no image is 1 both ways
    far = evaluate.read_hybrid(_DetailJudge(), torch.full((2, 3, 32, 32), 0.2), "a photo of the digit 1",
                               "a pencil sketch of the digit 1")
    assert (far["far"], far["near"], far["success"]) == (1.0, 1.0, 1.0)   # smooth: read 1 from far and near
    with pytest.raises(ValueError, match="anagram prompts must name digits"):
        evaluate.read_anagram(_TopJudge(), images, "a photo", "a photo of the digit 0")


# ------------------------------------------------------------------------------ the shipped results page
def test_the_shipped_results_belong_to_the_shipped_mini_model_and_the_current_profile():
    """``data/results`` (``python -m diffnb.evaluate --n 20 --ship``) was measured on the mini model that ships
    now: the hash of its weights on the page is the one computed from data/models/mini-if, and the illusion
    pairs on it are the quick profile's. Retraining mini, or changing the pairs, fails here until it is re-made."""
    from diffnb.mini.model import weights_sha256
    from diffnb.profiles import part_a_settings

    data = evaluate.read_results()
    meta, figures = data["meta"], data["figures"]
    assert meta["model_sha256"] == weights_sha256(), (
        "data/results was measured on another mini model; re-make it: python -m diffnb.evaluate --n 20 --ship")
    assert meta["sections"] == list(evaluate.SECTIONS) and meta["n"] >= 20
    prompts = part_a_settings("quick")["prompts"]
    assert [r["label"] for r in figures["1.8"]] == [f"{a} / {b}" for a, b in prompts["pairs"]]
    assert [r["label"] for r in figures["1.9"]] == [f"{a} / {b}" for a, b in prompts["hybrid_pairs"]]
    # 1.6a: every sampler on both grids at every step count, then DDPM on IF's lists, each NFE counted
    from diffnb.a import samplers
    fewer = figures["1.6a"]
    expected = [(f"{s}, {g}", n) for s in samplers.SAMPLERS for g in evaluate.FEWER_GRIDS for n in evaluate.FEWER_STEPS]
    expected += [(f"ddpm, {name}", len(samplers.if_list(name)) - 1) for name in evaluate.FEWER_IF_LISTS]
    assert [(r["label"], r["nfe"]) for r in fewer] == expected
    assert all(0 <= r["both"] <= min(r["digit"], r["style"]) <= 1 and r["n"] >= 60 for r in fewer)
    # the Markdown copy shipped beside it is the page these figures make with today's code
    shipped_md = (evaluate.shipped_results_dir() / "results.md").read_text(encoding="utf-8")
    assert shipped_md == evaluate.render_markdown(evaluate.results_sections(figures), meta)
    assert meta["model_sha256"][:16] in shipped_md


def test_the_pack_writes_the_shipped_page_and_keeps_a_page_a_run_wrote(tmp_path):
    page = evaluate.write_shipped_page(tmp_path)
    text = page.read_text(encoding="utf-8")
    assert evaluate.SHIPPED_MARK in text and evaluate.read_results()["meta"]["model_sha256"][:16] in text
    assert "data/results/" in text and (tmp_path / "results.md").is_file()
    assert evaluate.write_shipped_page(tmp_path) == page                      # its own page: made again
    mine = tmp_path / "mine"
    evaluate.write_results_page(FIGURES, META, mine)                         # this machine's run
    before = (mine / "results.html").read_text(encoding="utf-8")
    assert evaluate.write_shipped_page(mine) is None
    assert (mine / "results.html").read_text(encoding="utf-8") == before
    assert json.loads((mine / evaluate.RESULTS_JSON).read_text())["figures"]["1.8"][0]["success"] == 0.65


def test_a_missing_shipped_copy_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "shipped_results_dir", lambda: tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"python -m diffnb.evaluate --n 20 --ship"):
        evaluate.write_shipped_page(tmp_path / "out")


def test_ship_needs_every_section(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--n", "2", "--sections", "1.8", "--ship"])
    assert "--ship stores the whole page: leave out --sections" in capsys.readouterr().err
