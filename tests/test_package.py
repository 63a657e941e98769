import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "napari_aet"
ROOT = SRC.parents[1]


def test_import_is_light():
    code = (
        "import sys, napari_aet, napari_aet.core.io, napari_aet.core.simulate, napari_aet.core.geometry, "
        "napari_aet._reader, napari_aet._writer, napari_aet._sample_data, napari_aet.cli\n"
        "heavy = [m for m in ('torch', 'napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_core_never_imports_qt_or_napari():
    for path in (SRC / "core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                assert root not in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy"), path


def test_npe2_manifest_validates():
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-aet"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_manifest_is_the_top_level_file():
    from npe2 import PluginManifest

    mf = PluginManifest.from_distribution("napari-aet")
    top = PluginManifest.from_file(ROOT / "napari.yaml")
    assert mf.name == top.name == "napari-aet"
    assert [c.id for c in mf.contributions.commands] == [c.id for c in top.contributions.commands]
    assert mf.contributions.sample_data[0].display_name == "Pt nanoparticle (simulated)"


@pytest.mark.slow
def test_wheel_carries_manifest_and_resources(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    wheel = next(tmp_path.glob("napari_aet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_aet/napari.yaml" in names
    assert "napari_aet/resources/sample_pt.json" in names
    text = zipfile.ZipFile(wheel).read("napari_aet/napari.yaml").decode()
    assert text == (ROOT / "napari.yaml").read_text()
    eps = next(n for n in names if n.endswith("entry_points.txt"))
    assert "napari_aet:napari.yaml" in zipfile.ZipFile(wheel).read(eps).decode()
    # the licence travels with the wheel, with an SPDX expression; the package says it is typed
    assert any(n.endswith("licenses/LICENSE") for n in names) and "napari_aet/py.typed" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: BSD-3-Clause" in meta
    dist_lines = [l for l in meta.splitlines() if l.startswith("Requires-Dist: distributed")]
    assert dist_lines and all("extra ==" in l for l in dist_lines)  # only with an extra such as [batch]


def test_lint_and_the_public_ci_workflow_validate():
    """ruff (the configuration in pyproject.toml) passes, and the GitHub Actions workflow
    validates against the workflow schema vendored by check-jsonschema."""
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks"], cwd=ROOT,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-2000:]
    wf = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                         str(ROOT / ".github" / "workflows" / "tests.yml")], capture_output=True, text=True)
    assert wf.returncode == 0, wf.stdout + wf.stderr
    import yaml

    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text())["jobs"]
    assert set(jobs["test"]["strategy"]["matrix"]["os"]) == {"ubuntu-latest", "macos-latest", "windows-latest"}


def test_stage_functions_carry_numpydoc_and_the_api_page_is_current():
    """Every stage's entry point documents its parameters (and returns, when it returns
    something) in numpydoc; docs/api.md is generated from the docstrings and up to date."""
    import importlib
    import inspect
    import pkgutil
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[1] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        import api_docs
    finally:
        sys.path.remove(str(scripts))
    for qualified in api_docs.STAGE_FUNCTIONS:
        module, name = qualified.split(".")
        fn = getattr(importlib.import_module(f"napari_aet.core.{module}"), name)
        doc = inspect.getdoc(fn) or ""
        assert "Parameters\n----------" in doc, qualified
        returns_none = inspect.signature(fn).return_annotation in (None, "None")
        assert returns_none or "Returns\n-------" in doc, qualified
    # every public function of core documents its parameters the numpydoc way
    import napari_aet.core as core

    undocumented = []
    for info in pkgutil.iter_modules(core.__path__):
        mod = importlib.import_module(f"napari_aet.core.{info.name}")
        for name, fn in api_docs.public_functions(mod):
            if inspect.signature(fn).parameters and "Parameters\n----------" not in (inspect.getdoc(fn) or ""):
                undocumented.append(f"{info.name}.{name}")
    assert not undocumented, undocumented
    assert api_docs.main(["--check"]) == 0, "run python scripts/api_docs.py"


def test_no_function_runs_over_60_lines_without_a_reason():
    """A function body (after its docstring) over 60 lines needs a '# Long: reason' comment
    right above its definition."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "napari_aet"
    unexplained = []
    for path in sorted(src.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                body = body[1:]
            if not body or node.end_lineno - body[0].lineno + 1 <= 60:
                continue
            first = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            above = lines[max(0, first - 3):first]
            if not any(line.strip().startswith("# Long:") for line in above):
                unexplained.append(f"{path.relative_to(src)}:{node.lineno} {node.name}")
    assert not unexplained, unexplained


# Modules a library imports on our behalf that its own metadata does not declare: we declare
# the distribution ourselves (skimage.restoration.estimate_sigma needs PyWavelets).
IMPLIED_IMPORTS = {"pywt": "PyWavelets"}


def _declared_distributions() -> tuple[set, set]:
    """(core dependencies, extras) of pyproject.toml as normalised distribution names."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")  # noqa: E731
    core = {name(r) for r in project["dependencies"]}
    extras = {name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    return core, extras


def test_every_third_party_import_is_declared():
    """A module the package imports at top level or in a function must come from a declared
    distribution: a core dependency, or an extra when the import is optional (guarded or
    in a function that says which extra to install). A new user's fresh venv has nothing else."""
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    core, extras = _declared_distributions()
    stdlib = set(sys.stdlib_module_names)
    missing = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                if root in stdlib or root == "napari_aet":
                    continue
                owners = {d.lower().replace("_", "-") for d in dists.get(root, [root])}
                if not owners & (core | extras):
                    missing.setdefault(root, set()).add(path.name)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    for module, dist in IMPLIED_IMPORTS.items():
        assert dist.lower() in core, f"{dist} (for {module}) must be a core dependency"


def test_io_is_a_package_without_import_cycles():
    """core.io: one module per concern, each importing only modules before it (records, files,
    pixels, the format readers, angles, tilt series, atoms), none importing core.vendor (the
    old name kept for callers); every public name still importable from core.io."""
    order = ["records", "files", "pixels", "mrc", "tiff", "npy", "mat", "vendor", "angles", "tiltseries", "atoms"]
    pkg = SRC / "core" / "io"
    assert sorted(p.stem for p in pkg.glob("*.py") if p.stem != "__init__") == sorted(order)
    for k, name in enumerate(order):
        for node in ast.walk(ast.parse((pkg / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module] if node.module else [a.name for a in node.names]
                for t in targets:
                    assert t in order[:k], f"io.{name} imports io.{t}, which is not before it"
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                assert node.module != "vendor" and not any(a.name == "vendor" for a in node.names), name
    import napari_aet.core.io as io

    assert all(hasattr(io, n) for n in io.__all__) and len(io.__all__) >= 20
