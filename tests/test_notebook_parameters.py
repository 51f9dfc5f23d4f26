"""Every notebook checks its own parameters in its setup cell, as ``python -m diffnb.pack`` does, so a run
through papermill alone (``papermill A1.8_visual_anagrams.ipynb out.ipynb -p pairs 3``) stops at once with
the parameter's name, as the parameters cell names it, instead of deep inside a lesson's cell."""
import ast
import json
import re

import pytest

from diffnb import pack, profiles

NOTEBOOKS = pack.list_notebooks()


def _cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    i = next(i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", []))
    return "".join(cells[i]["source"]), "".join(cells[i + 1]["source"])


def _check_call(setup: str) -> ast.Call:
    calls = [n for n in ast.walk(ast.parse(setup)) if isinstance(n, ast.Call)
             and ast.unparse(n.func) == "profiles.check_parameters"]
    assert len(calls) == 1, "the setup cell calls profiles.check_parameters(...) once, with every parameter"
    return calls[0]


def _wrong_value(spec):
    """A value of the wrong kind for ``spec``: a number where text or a list belongs, text where a number does."""
    return "3" if spec.kind(3) or spec.kind(True) or spec.kind(0.5) else 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_setup_cell_checks_every_parameter_by_its_name(path):
    params, setup = _cells(path)
    names = [t.targets[0].id for t in ast.parse(params).body]
    call = _check_call(setup)
    assert not call.args and [k.arg for k in call.keywords] == names
    assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in call.keywords)
    # the check comes before anything is loaded: only imports above it
    before = setup[:setup.index("profiles.check_parameters")]
    assert all(line.startswith(("import ", "from ")) or not line.strip() for line in before.splitlines())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_wrong_type_for_any_parameter_is_refused_with_its_name(path):
    params, setup = _cells(path)
    check = ast.unparse(_check_call(setup))
    ns: dict = {"profiles": profiles}
    exec(params, ns)
    exec(check, dict(ns))                                    # the stored values pass
    for name in [t.targets[0].id for t in ast.parse(params).body]:
        bad = _wrong_value(profiles.NOTEBOOK_PARAMETERS[name])
        with pytest.raises((TypeError, ValueError)) as err:
            exec(check, dict(ns, **{name: bad}))
        assert str(err.value).startswith(f"{name} must be "), str(err.value)
        assert f"pass e.g. {name}=" in str(err.value)


@pytest.mark.parametrize("name, value, words", [
    ("pairs", 3, r"^pairs must be a non-empty list of \(prompt, prompt\) pairs, got 3 \(int\)"),
    ("i_starts", 5, r"^i_starts must be a non-empty list of indices"),
    ("num_samples", 0, r"^num_samples must be a positive int, got 0; pass e\.g\. num_samples=5$"),
    ("guidance_scale", float("nan"), r"^guidance_scale must be a finite number"),
])
def test_the_values_an_instructor_might_pass_by_mistake(name, value, words):
    with pytest.raises((TypeError, ValueError), match=words):
        profiles.check_parameters(**{name: value})


def test_a_parameter_without_a_rule_is_refused():
    with pytest.raises(ValueError, match=r"no rule for the notebook parameter\(s\) \['num_widgets'\]"):
        profiles.check_parameters(profile="quick", num_widgets=3)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_modules_are_imported_and_named_by_their_own_names(path):
    """``from diffnb.a import views``, never ``views as guidance``: a learner who reads ``views.FlipView``
    finds ``diffnb/a/views.py``; the prose names them the same way."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if cell["cell_type"] == "code":
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = getattr(node, "module", None) or ""
                    for alias in node.names:
                        full = f"{module}.{alias.name}" if module else alias.name
                        if full.startswith("diffnb") or module.startswith("diffnb"):
                            assert alias.asname in (None, alias.name), f"{path.name}: import {full} as {alias.asname}"
        assert not re.search(r"\b(ddpm|guidance|nbk)\.[a-z_]+\(", src), f"{path.name}: an old alias in {src[:200]}"
