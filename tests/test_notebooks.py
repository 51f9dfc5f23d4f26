"""The committed notebooks follow the pack's conventions and hold current outputs.

nbval (run by the same pytest command) re-executes each notebook and compares the cells marked
``# NBVAL_CHECK_OUTPUT``; these tests check what nbval cannot: that the stored outputs belong to
the current sources, and the conventions every notebook keeps.
"""
import json
import re

import pytest

from diffnb import pack

NOTEBOOKS = pack.list_notebooks()
IDS = [p.name for p in NOTEBOOKS]
FIX = "re-run `python -m diffnb.pack --commit` (or `--only NAME --commit`) and commit the notebooks"


def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_the_pack_has_notebooks():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_outputs_are_not_stale(path):
    nb = _load(path)
    stored = nb["metadata"].get("diffnb", {}).get("source_hash")
    assert stored is not None, f"{path.name} was never executed by the pack; {FIX}"
    assert stored == pack.source_hash(nb), f"{path.name}: its sources changed after its outputs were stored; {FIX}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_conventions(path):
    nb = _load(path)
    assert nb["metadata"]["kernelspec"] == pack.KERNELSPEC, \
        f"{path.name}: kernelspec {nb['metadata']['kernelspec']}; JupyterLab would rewrite it on open; {FIX}"
    values = pack.parameter_values(nb)                       # one cell, plain literals only
    assert values.get("profile") == "quick", "committed notebooks store the quick profile"
    assert values.get("device") == "auto"
    cells = nb["cells"]
    assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# "), \
        "a notebook opens with its title"
    code = [c for c in cells if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert None not in counts and counts == sorted(counts), f"{path.name} was not run top to bottom; {FIX}"
    for c in code:
        for out in c["outputs"]:
            assert out["output_type"] != "error", f"{path.name} stores an error: {out.get('ename')}"
            if out["output_type"] == "stream":
                assert "Traceback" not in "".join(out["text"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_checked_cells_print_only_plain_text(path):
    """A checked cell must not show progress bars, widgets or stderr: they differ between runs."""
    nb = _load(path)
    checked = [c for c in nb["cells"] if c["cell_type"] == "code" and "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
    assert checked, f"{path.name} has no cell whose output nbval checks"
    for c in checked:
        assert c["outputs"], "a checked cell must print something"
        for out in c["outputs"]:
            assert out["output_type"] == "stream" and out["name"] == "stdout", \
                f"checked cell in {path.name} has a {out['output_type']} output: print rounded text only"


TOKEN = re.compile(r"hf_[A-Za-z0-9]{30,}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_no_access_tokens(path):
    assert not TOKEN.search(path.read_text(encoding="utf-8")), f"{path.name} holds something like a token"
