"""Package conventions as tests: scanpy-style signatures of pp/tl/pl, numpydoc docstrings, lazy heavy imports
and no imports of another subpackage's private modules."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import crossmodalnet as cmn

PLOT_TAIL = ["ax", "show", "save", "return_fig"]


def _public(module):
    return [(f"{module.__name__}.{name}", getattr(module, name)) for name in module.__all__]


PP_TL = _public(cmn.pp) + _public(cmn.tl)
PL = _public(cmn.pl)
# Converters and in-place transforms: no named result, hence no `key_added`.
NOT_WRITERS = {
    "crossmodalnet.pp.to_mudata",
    "crossmodalnet.pp.log_normalize",
    "crossmodalnet.pp.clr",
    "crossmodalnet.pp.dsb",
    "crossmodalnet.pp.normalize_protein",
    "crossmodalnet.pp.protein_genes",
    "crossmodalnet.pp.drop_proteins",
    "crossmodalnet.pp.harmonize_proteins",
}
# The converter takes an AnnData; it is the one way into the MuData-only API. The protein-to-gene map
# is a lookup of names (e.g. `mdata["prot"].var_names`) and returns a table. Protein harmonisation compares
# several panels (MuData, AnnData or names) and returns a table; it renames only with `inplace=True`.
FIRST_ARG = {
    "crossmodalnet.pp.to_mudata": "adata",
    "crossmodalnet.pp.protein_genes": "proteins",
    "crossmodalnet.pp.harmonize_proteins": "panels",
    # an atlas file, predicted file to file: its cell names are never all in memory, so no MuData is built
    "crossmodalnet.tl.predict_atlas": "path",
}
# Writes an on-disk AnnData, not into a MuData: a named result (`key_added`, its `uns` key) but nothing to copy.
FILE_WRITERS = {"crossmodalnet.tl.predict_atlas"}
# Functions that need a trained model take it as the second, positional argument.
MODEL_SECOND = {"predict_protein", "predict_atlas", "basal_embedding", "time_embedding", "saliency"}


def test_import_without_torch():
    code = (
        "import sys; import crossmodalnet.pp, crossmodalnet.pl, crossmodalnet.datasets, crossmodalnet.tl; "
        "heavy = [m for m in ('torch', 'lightning', 'scvi') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


@pytest.mark.parametrize(("name", "func"), PP_TL, ids=[n for n, _ in PP_TL])
def test_signature_conventions(name, func):
    params = list(inspect.signature(func).parameters.values())
    assert params[0].name == FIRST_ARG.get(name, "mdata"), name
    assert params[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    rest = params[1:]
    if name.rsplit(".", 1)[1] in MODEL_SECOND:
        assert rest[0].name == "model", name
        assert rest[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        rest = rest[1:]
    elif name == "crossmodalnet.pp.harmonize_genes":
        assert rest[0].name == "model"
        rest = rest[1:]
    elif name == "crossmodalnet.pp.drop_proteins":  # what to remove is the call's object: positional, required
        assert rest[0].name == "names"
        assert rest[0].default is inspect.Parameter.empty
        rest = rest[1:]
    bad = [p.name for p in rest if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert not bad, f"{name}: not keyword-only: {bad}"
    by_name = {p.name: p for p in params}
    if "copy" in by_name:
        assert by_name["copy"].default is False, name
    if "inplace" in by_name:
        assert by_name["inplace"].default is False, name
        assert "copy" not in by_name, name  # never both (STYLE 2.2)
    if name not in NOT_WRITERS:
        assert "key_added" in by_name, name
        assert ("copy" in by_name) != (name in FILE_WRITERS), name
    if "rna_key" in by_name:
        assert by_name["rna_key"].default == "rna"
    if "protein_key" in by_name:
        assert by_name["protein_key"].default == "prot"
    for p in rest:  # boolean flags are keyword-only with a bool default (ruff FBT)
        if isinstance(p.default, bool):
            assert p.kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(("name", "func"), PL, ids=[n for n, _ in PL])
def test_plot_conventions(name, func):
    params = list(inspect.signature(func).parameters.values())
    first = "model" if name.endswith("training_history") else "mdata"
    assert params[0].name == first
    assert [p.name for p in params[-4:]] == PLOT_TAIL, name
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), name
    assert params[-1].default is False
    assert params[-4].default is None


def _all_public_callables():
    from crossmodalnet import model

    out = PP_TL + PL + _public(cmn.datasets) + _public(model)
    for name, obj in list(out):
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (
                    inspect.isfunction(member) or isinstance(member, classmethod | property)
                ):
                    out.append((f"{name}.{attr}", member))
    return out


def test_no_unrendered_docstring_placeholders():
    pattern = re.compile(r"%\([a-zA-Z_]+\)s")
    bad = []
    for name, obj in _all_public_callables():
        target = obj.__func__ if isinstance(obj, classmethod) else obj
        doc = inspect.getdoc(target) or ""
        if pattern.search(doc):
            bad.append(name)
    assert not bad, f"unrendered docrep placeholders in {bad}"


@pytest.mark.parametrize(("name", "func"), PP_TL + PL, ids=[n for n, _ in PP_TL + PL])
def test_parameters_documented(name, func):
    """numpydoc: a summary line, every parameter under Parameters, and a Returns section."""
    doc = inspect.getdoc(func)
    assert doc, name
    summary = doc.splitlines()[0]
    assert summary.endswith("."), name
    assert summary[0].isupper(), name
    assert "\nParameters\n----------\n" in doc, name
    assert "\nReturns\n-------\n" in doc, name
    documented = set(re.findall(r"^([a-z_][a-z0-9_]*)(?:, [a-z_][a-z0-9_]*)*$", doc, flags=re.M))
    for line in re.findall(r"^([a-z_][a-z0-9_, ]*)$", doc, flags=re.M):
        documented |= {part.strip() for part in line.split(",")}
    missing = [p for p in inspect.signature(func).parameters if p not in documented]
    assert not missing, f"{name}: undocumented parameters {missing}"


SRC = Path(cmn.__file__).resolve().parent
# Cross-package private imports that are tolerated (none): the test fails on any import not listed here, and on
# a listed one that is gone.
KNOWN: set[tuple[str, str]] = set()


def _private_cross_imports(path: Path, src: Path = SRC) -> list[str]:
    """Modules ``crossmodalnet.<pkg>._<mod>`` imported by ``path`` from outside ``<pkg>``."""
    rel = path.relative_to(src)
    package = ["crossmodalnet", *rel.parts[:-1]]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                module = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module
            names = [module] + [f"{module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "crossmodalnet" or len(parts) < 3:
                continue
            if parts[2].startswith("_") and parts[1] != (package[1] if len(package) > 1 else None):
                found.append(".".join(parts[:3]))
    return sorted(set(found))


def test_no_private_imports_across_subpackages():
    """A subpackage uses another one only through its public ``__init__`` (top-level ``_*`` modules are shared)."""
    found = {
        (path.relative_to(SRC).as_posix(), name) for path in SRC.rglob("*.py") for name in _private_cross_imports(path)
    }
    new = sorted(found - KNOWN)
    assert not new, f"private modules of another subpackage imported: {new}"
    fixed = sorted(KNOWN - found)
    assert not fixed, f"no longer imported, remove from KNOWN: {fixed}"


@pytest.mark.parametrize(
    ("where", "source", "expected"),
    [
        ("pl/_x.py", "from crossmodalnet.pp._utils import select_names", ["crossmodalnet.pp._utils"]),
        ("pl/_x.py", "from ..pp._utils import select_names", ["crossmodalnet.pp._utils"]),
        ("pl/_x.py", "from ..pp import _utils", ["crossmodalnet.pp._utils"]),
        ("pl/_x.py", "import crossmodalnet.tl._predict", ["crossmodalnet.tl._predict"]),
        ("pl/_x.py", "from crossmodalnet.pp import protein_genes", []),
        ("pl/_x.py", "from crossmodalnet._utils import select_names", []),
        ("pl/_x.py", "from ._utils import grid", []),
        ("pl/_x.py", "from crossmodalnet.pl._utils import grid", []),
        ("_cli.py", "from crossmodalnet.tl._predict import f", ["crossmodalnet.tl._predict"]),
    ],
)
def test_private_import_detection(tmp_path, where, source, expected):
    root = tmp_path / "crossmodalnet"
    path = root / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source + "\n")
    assert _private_cross_imports(path, root) == expected
