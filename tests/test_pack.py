"""The pack runner: papermill with parameters, an HTML page per notebook, an index, --commit."""
import json
from pathlib import Path

import nbformat
import pytest

from diffnb import pack


def _tiny_notebook(path, body="print(profile * 2)"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "quick"\ndevice = "auto"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A tiny notebook"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.fixture
def tiny_pack(tmp_path, monkeypatch):
    books = tmp_path / "notebooks"
    books.mkdir()
    _tiny_notebook(books / "A1_ok.ipynb")
    _tiny_notebook(books / "A2_fails.ipynb", "raise ValueError('broken on purpose')")
    monkeypatch.setattr(pack, "notebook_dir", lambda: books)
    return tmp_path


def test_pack_runs_every_notebook_with_parameters(tiny_pack):
    out = tiny_pack / "out"
    rc = pack.main(["--out", str(out), "-p", "profile", "seed"])
    assert rc == 1                                           # one notebook failed on purpose
    executed = json.loads((out / "notebooks" / "A1_ok.ipynb").read_text())
    texts = ["".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", [])]
    assert "seedseed\n" in texts                             # the parameter reached the kernel
    assert (out / "html" / "A1_ok.html").read_text().count("seedseed") >= 1
    index = (out / "index.html").read_text()
    assert "A tiny notebook" in index and "FAILED" in index and "broken on purpose" in index


def test_commit_stamps_the_source_hash(tiny_pack):
    (tiny_pack / "notebooks" / "A2_fails.ipynb").unlink()
    assert pack.main(["--out", str(tiny_pack / "out"), "--commit"]) == 0
    nb = json.loads((tiny_pack / "notebooks" / "A1_ok.ipynb").read_text())
    assert nb["metadata"]["diffnb"]["source_hash"] == pack.source_hash(nb)
    assert "papermill" not in nb["metadata"]
    nb["cells"][2]["source"] = "print('changed')"
    assert pack.source_hash(nb) != nb["metadata"]["diffnb"]["source_hash"]


def test_parameters_cell_must_hold_literals():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("profile = 'quick'\nimport os")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    with pytest.raises(ValueError, match="plain literals"):
        pack.parameter_values(nb)
    nb.cells = []
    with pytest.raises(ValueError, match="exactly one cell tagged 'parameters'"):
        pack.parameter_values(nb)


# --- the front page (index.html) ---------------------------------------------------------------

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def _summary_notebook(reading="a: 1.00\nb: True\n", title="Demo <&> notebook"):
    """A notebook as the pack stores it: a title and a teaching paragraph, a figure, a checked cell."""
    nb = nbformat.v4.new_notebook()
    figure = nbformat.v4.new_code_cell("show()", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="not a checked reading\n"),
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})])
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(summary)", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=reading),
        nbformat.v4.new_output("stream", name="stderr", text="a warning\n")])
    nb.cells = [nbformat.v4.new_markdown_cell(
                    f"# {title}\n\nThe forward process adds *noise* to $x_0$, see [A0](A0_setup.ipynb) and "
                    "`diffnb.forward`. Its marginal is known:\n\n$$q(x_t)$$\n\nMore prose."),
                figure, checked]
    return nb


def _balanced(page):
    """The page's tags nest properly (void elements aside) and the document is one html element."""
    from html.parser import HTMLParser

    void = {"meta", "img", "br", "wbr", "link", "input", "hr"}
    stack, problems = [], []

    class Check(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in void:
                stack.append(tag)

        def handle_endtag(self, tag):
            if not stack or stack.pop() != tag:
                problems.append(tag)

    Check().feed(page)
    return page.startswith("<!doctype html>") and not stack and not problems


def _cards(page):
    import re
    return dict(re.findall(r'<article class="nb" id="([^"]+)">(.*?)</article>', page, re.S))


def test_notebook_summary_reads_the_executed_notebook():
    s = pack.notebook_summary(_summary_notebook())
    assert s == {"title": "Demo <&> notebook",
                 "teaches": "The forward process adds noise to $x_0$, see A0 and diffnb.forward.",
                 "thumbnail_png_b64": PNG, "reading": ["a: 1.00", "b: True"], "error": ""}
    lines = "".join(f"line {i}\n" for i in range(12))
    assert pack.notebook_summary(_summary_notebook(lines))["reading"] == [f"line {i}" for i in range(8)] + ["…"]
    nb = _summary_notebook()
    nb.cells[1].outputs = []
    nb.cells[2].outputs.append(nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[]))
    s = pack.notebook_summary(nb)
    assert s["thumbnail_png_b64"] is None and s["error"] == "ValueError: bad"
    nb = _summary_notebook()                            # an exercise's check is not the lesson's reading
    check = nbformat.v4.new_code_cell('# NBVAL_CHECK_OUTPUT\nforward = exercises.check("forward", forward)',
                                      metadata={"tags": ["check:forward"]})
    check.outputs = [nbformat.v4.new_output("stream", name="stdout", text="✅ forward: passed\n")]
    nb.cells.insert(1, check)
    assert pack.notebook_summary(nb)["reading"] == ["a: 1.00", "b: True"]


def test_teaching_line_is_short_plain_text_that_keeps_latex_whole():
    long = ("A sentence that goes on about the UNet $\\varepsilon_\\theta(x_t, t, c)$ and its many parts, " * 4).strip()
    line = pack.teaching_line({"cells": [nbformat.v4.new_markdown_cell("# T\n\n" + long)]})
    assert line.endswith(" …") and len(line) <= 202 and line.count("$") % 2 == 0
    assert line.startswith("A sentence that goes on about the UNet $\\varepsilon_\\theta(x_t, t, c)$")
    short = "First sentence here. Second **one** with [a link](http://x) at the end."
    assert pack.teaching_line({"cells": [nbformat.v4.new_markdown_cell(f"# T\n\n{short}")]}) == \
        "First sentence here. Second one with a link at the end."
    assert pack.teaching_line({"cells": [nbformat.v4.new_markdown_cell("# Only a title")]}) == ""


def test_front_page_draws_the_teaching_lines_math_as_mathml():
    """A learner reads the formulas of a teaching line drawn (MathML: no script, no network), not as LaTeX;
    the prose around them is escaped."""
    h = pack.prose_html("The UNet $\\varepsilon_\\theta(x_t, t)$ & <its> noise $x_0$.")
    assert h.startswith("The UNet <math") and "&amp; &lt;its&gt; noise <math" in h and h.endswith("</math>.")
    assert "$" not in h and "\\varepsilon" not in h
    assert h.count("<msub>") == 3 and "&#x003B5;" in h                 # ε with its subscript θ, x_t, x_0
    assert pack.prose_html("no math < here") == "no math &lt; here"


def test_settings_are_said_in_words():
    assert pack.settings_in_words({}) == ("the <code>quick</code> profile (the stored default: two CPU cores, "
                                          "offline data and the pack's own small models)")
    assert pack.settings_in_words({"profile": "seed", "device": "cuda", "epochs": 3}) == \
        "profile <code>seed</code>, device <code>cuda</code>, epochs 3"
    assert pack.settings_in_words({"guidance_scale": 5.0}) == "the <code>quick</code> profile with guidance scale 5.0"


def test_front_page_shows_each_notebook(tmp_path):
    nbformat.write(_summary_notebook(), str(tmp_path / "A1_demo.ipynb"))
    row = {"name": "A1_demo", "title": "Demo <&> notebook", "seconds": 12.3, "ok": True, "error": "",
           "executed": tmp_path / "A1_demo.ipynb", "page": "html/A1_demo.html"}
    index = tmp_path / "index.html"
    pack.write_index([row], index, {})
    page = index.read_text()
    assert _balanced(page) and "parameters: {}" not in page
    card = _cards(page)["A1_demo"]
    assert '<a href="html/A1_demo.html">Demo &lt;&amp;&gt; notebook</a>' in card
    assert f'<img alt="first figure of Demo &lt;&amp;&gt; notebook" src="data:image/png;base64,{PNG}">' in card
    assert "The forward process adds noise to <math" in card and "</math>, see A0 and diffnb.forward." in card
    assert '<pre class="reading">a: 1.00\nb: True</pre>' in card and "not a checked reading" not in card
    assert "12 s" in card and '<span class="ok">ok</span>' in card
    assert "Settings: the <code>quick</code> profile (the stored default: two CPU cores" in page
    assert 'href="results.html"' not in page and "<code>python -m diffnb.evaluate --n 20</code> writes it" in page

    (tmp_path / "results.html").write_text("<!doctype html><title>results</title>")
    pack.write_index([row], index, {"profile": "seed", "device": "cuda"})
    page = index.read_text()
    assert "Settings: profile <code>seed</code>, device <code>cuda</code>." in page
    assert '<a href="results.html">' in page and "diffnb.evaluate --n 20" not in page


def test_front_page_escapes_what_notebooks_say(tmp_path):
    nbformat.write(_summary_notebook("<script>alert(1)</script>\n", title="<script>x</script>"),
                   str(tmp_path / "A1_bad.ipynb"))
    row = {"name": "A1_bad", "title": "<script>x</script>", "seconds": 1.0, "ok": False,
           "error": "RuntimeError: <b>boom</b>", "executed": tmp_path / "A1_bad.ipynb"}
    pack.write_index([row], tmp_path / "index.html", {})
    page = (tmp_path / "index.html").read_text()
    assert "<script" not in page and "<b>boom" not in page and _balanced(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "FAILED: RuntimeError: &lt;b&gt;boom" in page
    assert "<a href" not in _cards(page)["A1_bad"]             # a failed notebook has no page to link


def test_failed_row_reads_only_this_runs_outputs(tmp_path):
    nbformat.write(_summary_notebook(), str(tmp_path / "A1_src.ipynb"))
    row = {"name": "A1_src", "title": "Demo", "seconds": 0.0, "ok": False, "error": "ValueError: no such parameter",
           "executed": None, "source": tmp_path / "A1_src.ipynb"}             # failed before running
    pack.write_index([row], tmp_path / "index.html", {"num_hidden": 8})
    card = _cards((tmp_path / "index.html").read_text())["A1_src"]
    assert "FAILED: ValueError: no such parameter" in card and "The forward process adds noise" in card
    assert "<img" not in card and "reading" not in card                     # the stored outputs are not this run's
    assert "not run" in card


def test_a_run_of_some_notebooks_still_lists_the_whole_pack(tmp_path, monkeypatch):
    """--only runs a few notebooks; the front page lists them with this run's outputs and every other
    notebook with its stored outputs, said so (it showed one card for one notebook)."""
    import shutil

    def fake_run(src, out, params, timeout=None):                 # the stored notebook stands in for a run
        shutil.copyfile(src, out)
        return 3.0

    monkeypatch.setattr(pack, "run_notebook", fake_run)
    monkeypatch.setattr(pack, "to_html", lambda nb, page: Path(page).write_text("<html></html>"))
    assert pack.main(["--only", "A1.1", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    cards = _cards(page)
    assert list(cards) == [p.stem for p in pack.list_notebooks()] and _balanced(page)
    assert "3 s" in cards["A1.1_forward"] and 'href="html/A1.1_forward.html"' in cards["A1.1_forward"]
    assert all("stored run" in c for name, c in cards.items() if name != "A1.1_forward")
    others = len(pack.list_notebooks()) - 1
    assert f"1 of 1 notebooks ran without an error. The other {others} (not selected by <code>--only</code>)" in page


def test_index_only_writes_the_front_page_from_the_stored_notebooks(tmp_path, monkeypatch):
    def no_running(*args, **kwargs):
        raise AssertionError("--index-only must not run or convert a notebook")

    monkeypatch.setattr(pack, "run_notebook", no_running)
    monkeypatch.setattr(pack, "to_html", no_running)
    books = pack.list_notebooks()
    assert pack.main(["--index-only", "--out", str(tmp_path)]) == 0
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    cards = _cards(page)
    assert list(cards) == [p.stem for p in books] and len(cards) == len(list(pack.notebook_dir().glob("*.ipynb")))
    assert _balanced(page)
    for path in books:
        nb = json.loads(path.read_text(encoding="utf-8"))
        has_figure = any("image/png" in o.get("data", {}) for c in nb["cells"] for o in c.get("outputs", []))
        card = cards[path.stem]
        assert ('src="data:image/png;base64,' in card) == has_figure, path.name
        assert "stored run" in card and '<pre class="reading">' in card and '<p class="teaches">' in card
    assert not (tmp_path / "html").exists() and not (tmp_path / "notebooks").exists()

    assert pack.main(["--index-only", "--only", "B2", "--out", str(tmp_path / "b2")]) == 0
    assert list(_cards((tmp_path / "b2" / "index.html").read_text())) == [p.stem for p in books if "B2" in p.name]
    with pytest.raises(SystemExit):
        pack.main(["--index-only", "-p", "profile", "seed", "--out", str(tmp_path)])


# ------------------------------------------------------------------------------ what a newcomer reads
def test_the_pack_prints_only_what_it_means_to_say(tiny_pack, capfd):
    """No kernel warning: each kernel talks over local sockets (ipc), so ipykernel has no unencrypted TCP
    port to warn about; everything on stdout and stderr is the pack's own progress."""
    import os
    if os.name != "nt":
        assert pack.kernel_manager_class()().transport == "ipc"
    pack.main(["--out", str(tiny_pack / "out"), "--only", "A1_ok"])
    out, err = capfd.readouterr()
    assert (tiny_pack / "out" / "results.html").is_file()            # the shipped results page, beside the index
    assert 'href="results.html"' in (tiny_pack / "out" / "index.html").read_text()
    assert "WARNING" not in out + err and "encryption" not in out + err, out + err
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert all(line.startswith(("[1/1] A1_ok.ipynb", "      done in ", "1 of 1 notebooks ran")) for line in lines), lines


def test_markdown_math_becomes_mathml_and_code_stays_as_it_is():
    text = ("The mean $\\bar\\alpha_t$ and $x_0 * 2$ here, `code $x$ stays`, a price of \\$5, and\n\n"
            "$$\\varepsilon = \\tfrac12\\Big(a + b\\Big)$$\n\n```python\nx = '$y$'\n```\n")
    out = pack.markdown_with_mathml(text)
    assert out.count("<math") == 3 and 'display="block"' in out
    assert "`code $x$ stays`" in out and "x = '$y$'" in out and "\\$5" in out      # code and \$ untouched
    assert "&#95;" not in out.split("<math")[0] and "*" not in out.split("`")[0].split("The mean")[1]
    with pytest.raises(ValueError, match=r"latex2mathml cannot convert the formula \$x\^\$"):
        pack.markdown_with_mathml("broken $x^$ here")
    with pytest.raises(ValueError, match=r"latex2mathml does not know \\unknowncmd in the formula"):
        pack.markdown_with_mathml("unknown $\\unknowncmd x$ here")


def _markdown_blocks(page: str) -> list[str]:
    """The text of each rendered Markdown cell of an nbconvert page, its MathML taken out."""
    import re
    blocks = re.findall(r'<div class="jp-RenderedHTMLCommon jp-RenderedMarkdown jp-MarkdownOutput[^"]*"[^>]*>(.*?)</div>',
                        page, re.S)
    return [re.sub(r"<math.*?</math>", "", b, flags=re.S) for b in blocks]


@pytest.mark.parametrize("name", ["A1.8_visual_anagrams", "B2.1_time_conditioning"])
def test_html_pages_draw_their_math_with_no_network(tmp_path, name):
    """The page of a stored notebook: every formula of its Markdown is MathML, no raw $...$ is left for a
    script to find, and nothing is loaded from the network (no MathJax, no require.js)."""
    import re
    page_path = tmp_path / f"{name}.html"
    pack.to_html(pack.notebook_dir() / f"{name}.ipynb", page_path)
    page = page_path.read_text(encoding="utf-8")
    blocks = _markdown_blocks(page)
    assert blocks and page.count("<math") >= 5
    for block in blocks:
        text = re.sub(r"<code>.*?</code>|<pre>.*?</pre>", "", block, flags=re.S)
        assert not re.search(r"\$[^$\s][^$]*\$", text), text[:300]
    assert not re.search(r"<script[^>]+src=\"https?:", page)
    assert "mathjax" not in page.lower()
    assert "No description has been provided" not in page and 'alt="A figure drawn by the code cell above' in page


def test_every_notebooks_formulas_convert():
    for path in pack.list_notebooks():
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "markdown":
                pack.markdown_with_mathml("".join(cell["source"]))      # raises, naming the formula, if one fails


def test_the_notebooks_sort_in_the_courses_order():
    """File names sort as the course runs (what JupyterLab's file browser, ``ls`` and the pack show): part, section,
    subsection, then a letter for a lesson added after it (A1.9 < A1.9a < A1.9b < B1.1; B2.1 < B2.1a < B2.2)."""
    import re
    names = [p.stem for p in pack.list_notebooks()]

    def course_key(name):
        part, major, minor, extra = re.match(r"([AB])(\d+)(?:\.(\d+))?([a-z]?)_", name).groups()
        return part, int(major), int(minor or 0), extra
    assert names == sorted(names, key=course_key)
