"""The pack runner: papermill with parameters, an HTML page per notebook, an index, --commit."""
import json

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
