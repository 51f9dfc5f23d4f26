"""The package's layout keeps its promises: imports point one way (``core`` <- ``a``, ``b`` <- ``mini``
<- the top-level modules), no private name is used outside its module, and a notebook imports every
module it uses by name (none resolves only because another module happened to import it first)."""
import ast
import json
import re
from pathlib import Path

import pytest

from diffnb import pack

PACKAGE = Path(__file__).resolve().parents[1] / "diffnb"
RANK = {"core": 0, "a": 1, "b": 1, "mini": 2}             # the top-level modules rank 3
MODULES = sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in RANK else "top"


def _imports(path: Path):
    """(line, module imported, names taken from it) for every diffnb import in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("diffnb")):
            yield node.lineno, node.level, node.module or "", [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("diffnb"):
                    yield node.lineno, 0, a.name, []


def test_the_package_has_its_four_folders():
    assert {p.parent.name for p in MODULES} >= {"a", "b", "mini", "core", "diffnb"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_imports_point_one_way(path):
    me = _name(path)
    if me == "diffnb":
        return                                            # the package's front door re-exports all
    rank = RANK.get(_layer(me), 3)
    for line, level, module, names in _imports(path):
        assert not level, f"{me}:{line} imports relatively; write the absolute diffnb.* path"
        targets = [f"{module}.{n}" for n in names] if module in ("diffnb", "diffnb.a", "diffnb.b",
                                                                   "diffnb.mini", "diffnb.core") else [module]
        for target in targets:
            layer = _layer(target)
            if layer == _layer(me):
                continue
            assert RANK.get(layer, 3) < rank, (f"{me}:{line} imports {target}: {_layer(me)}/ may import only "
                                               f"from folders below it (core <- a, b <- mini <- top level)")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _name(p))
def test_no_private_name_is_used_outside_its_module(path):
    me = _name(path)
    text = path.read_text(encoding="utf-8")
    for line, _, module, names in _imports(path):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, f"{me}:{line} imports {private} from {module}"
    aliases = {a.asname or a.name for node in ast.walk(ast.parse(text)) if isinstance(node, ast.ImportFrom)
               and (node.module or "").startswith("diffnb") for a in node.names}
    for alias in sorted(aliases):
        hit = re.search(rf"\b{re.escape(alias)}\._[a-z]\w*", text)
        assert not hit, f"{me} uses {hit.group(0)}, a private name of another module"


@pytest.mark.parametrize("path", pack.list_notebooks(), ids=lambda p: p.name)
def test_a_notebook_imports_each_module_it_uses(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    imported = set(re.findall(r"^\s*import (diffnb(?:\.\w+)*)", code, re.M))
    for used in sorted(set(re.findall(r"\bdiffnb\.((?:a|b|mini|core)\.\w+)", code))):
        assert f"diffnb.{used}" in imported, f"{path.name} uses diffnb.{used} without `import diffnb.{used}`"
