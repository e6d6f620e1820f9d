"""The house rules: one installed namespace, layers whose imports only point down, no import cycle.

docs/architecture.md draws the same map; a new module must be given a layer here (the test says so).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Where each installed subpackage lives in the repository (pyproject's package-dir).
SOURCES = {
    "graphrec": ROOT / "graphrec",
    "graphrec.data": ROOT / "data",
    "graphrec.kg": ROOT / "kg",
}
# Lowest first: the folder a module lives in is its layer (graphrec.data and graphrec.kg are the root folders data/
# and kg/, where the product design fixes them). A module may import its own layer and the ones below, never one
# above.
LAYERS = ("core", "data", "kg", "model", "stages", "pipeline", "app")
# The package's face, above every layer: its __init__ (graphrec.load_export, graphrec.Recommender), `python -m
# graphrec`, and the former import path graphrec.export (graphrec.export.pseudonymize_id) that users may hold.
FACE = ("graphrec", "graphrec.__main__", "graphrec.export")
# The command line imports the torch-backed stages inside their commands, so that `graphrec data ...`, --help
# and usage errors start fast. It is the top of the house: nothing imports it, so this can hide no cycle.
LAZY_OK = ("graphrec.app.cli",)


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            parts = rel[:-1] if rel[-1] == "__init__" else rel
            out[".".join((package, *parts))] = path
    return out


def _layer(module: str) -> int:
    """The index in LAYERS of the folder `module` lives in; the face is above them all."""
    if module in FACE:
        return len(LAYERS)
    folder = module.split(".")[1] if module.count(".") else ""
    if folder not in LAYERS:
        raise AssertionError(
            f"{module} is in no layer folder: move it into graphrec/<layer>/ (one of {LAYERS})"
        )
    return LAYERS.index(folder)


def _layer_name(module: str) -> str:
    return "face" if module in FACE else LAYERS[_layer(module)]


def _imports(path: Path, module: str) -> list[tuple[str, bool, int]]:
    """(imported graphrec module, inside a function?, line) for every graphrec import of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    in_function: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(node) if n is not node)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = (
                node.module
                if node.level == 0
                else module.rsplit(".", node.level)[0] + "." + node.module
            )
            # `from graphrec.model import artifacts` imports the module graphrec.model.artifacts, not a name of the
            # package
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                for a in node.names
            ]
        for name in names:
            if name == "graphrec" or name.startswith("graphrec."):
                target = max(
                    (m for m in MODULES if name == m or name.startswith(m + ".")),
                    key=len,
                    default=name,
                )
                found.append((target, id(node) in in_function, node.lineno))
    return found


MODULES = _modules()


def test_every_module_has_a_layer_and_imports_point_down():
    upward, hidden = [], []
    for module, path in MODULES.items():
        for target, in_function, line in _imports(path, module):
            if target == module:
                continue
            if in_function and module not in LAZY_OK:
                hidden.append(
                    f"{path.relative_to(ROOT)}:{line} imports {target} inside a function"
                )
            if _layer(target) > _layer(module):
                upward.append(
                    f"{path.relative_to(ROOT)}:{line} ({_layer_name(module)}) imports {target} "
                    f"({_layer_name(target)})"
                )
    assert not hidden, "\n".join(hidden)
    assert not upward, "\n".join(upward)


def test_the_tree_shows_the_layers():
    """graphrec/ holds one folder per layer it owns and the face's modules, nothing else: the tree alone tells which
    layer a file is in."""
    owned = {
        p.name
        for p in (ROOT / "graphrec").iterdir()
        if p.is_dir() and p.name != "__pycache__"
    }
    assert owned == set(LAYERS) - {"data", "kg"}, sorted(owned)
    flat = {
        f"graphrec.{p.stem}" if p.stem != "__init__" else "graphrec"
        for p in (ROOT / "graphrec").glob("*.py")
    }
    assert flat == set(FACE), sorted(flat)
    for layer in owned:
        assert (
            (ROOT / "graphrec" / layer / "__init__.py")
            .read_text()
            .startswith(f'"""Layer {LAYERS.index(layer) + 1}, {layer}:')
        )


def test_no_import_cycle():
    graph = {
        m: {t for t, _, _ in _imports(p, m) if t != m and t in MODULES}
        for m, p in MODULES.items()
    }
    # a package's __init__ importing its own submodules is how a package exposes them, not a cycle
    for m in graph:
        graph[m] = {t for t in graph[m] if not t.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join(stack[stack.index(t) :] + [t])
                )
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_library_code_does_not_print():
    offenders = []
    for module, path in MODULES.items():
        if module in ("graphrec.app.cli",):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_wheel_installs_only_the_graphrec_namespace(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("graphrec-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith((".dist-info", ".data"))} == {
        "graphrec"
    }, sorted(top)
    for expected in (
        "graphrec/data/dataset.py",
        "graphrec/kg/graph.py",
        "graphrec/app/cli.py",
        "graphrec/__main__.py",
        "graphrec/py.typed",
    ):
        assert expected in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "graphrec = graphrec.app.cli:main"
        in zipfile.ZipFile(wheel).read(entry).decode()
    )


def test_public_api_imports_beside_a_users_own_data_and_kg_modules(tmp_path):
    (tmp_path / "data.py").write_text(
        "raise ImportError('the user data.py was imported')\n"
    )
    (tmp_path / "kg.py").write_text(
        "raise ImportError('the user kg.py was imported')\n"
    )
    (tmp_path / "cli.py").write_text(
        "raise ImportError('the user cli.py was imported')\n"
    )
    code = (
        "import graphrec, graphrec.data, graphrec.kg\n"
        "from graphrec.data.dataset import Dataset\nfrom graphrec.kg.graph import KnowledgeGraph\n"
        "assert callable(graphrec.load_export)\nprint(graphrec.data.__file__)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert not Path(r.stdout.strip()).resolve().is_relative_to(tmp_path.resolve())


@pytest.mark.parametrize(
    "argv", [["-m", "graphrec", "--help"], [str(ROOT / "cli.py"), "--help"]]
)
def test_module_and_shim_run_the_command_line(argv, tmp_path):
    r = subprocess.run(
        [sys.executable, *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "quickstart" in r.stdout and "Traceback" not in r.stderr


def test_the_api_reference_page_is_what_the_code_says():
    r = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "api_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]


def _surface() -> list[tuple[str, str, str]]:
    """(section, module, name) of every entry docs/reference.md documents (.ci/api_reference.py's SURFACE)."""
    spec = importlib.util.spec_from_file_location(
        "api_reference", ROOT / ".ci" / "api_reference.py"
    )
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    return [(sec, mod, name) for sec, mod, names in page.SURFACE for name in names]


@pytest.mark.parametrize("section, module, name", _surface())
def test_each_public_entry_point_documents_its_arguments_result_and_an_example(
    section, module, name
):
    """One docstring convention on the public surface (Google style, as ruff's D rules check on the public
    modules): a summary line, then the body; Args when it takes any, Returns when it gives something back, and
    an example for each entry point (the stages, Recommender, load_export)."""
    obj = getattr(importlib.import_module(module), name)
    doc = inspect.getdoc(obj) or ""
    lines = doc.splitlines()
    assert lines and lines[0].endswith(".") and (len(lines) == 1 or not lines[1]), doc[
        :200
    ]
    if not inspect.isfunction(obj):
        return  # classes: their fields and methods carry the sections (ruff D on their modules)
    signature = inspect.signature(obj)
    if signature.parameters:
        assert "\nArgs:\n" in doc, name
    if signature.return_annotation not in (None, "None"):
        assert "\nReturns:\n" in doc, name
    if section == "Stages" or name == "load_export":
        assert "Example::" in doc, name
