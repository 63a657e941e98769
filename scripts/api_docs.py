"""Write docs/api.md, the API page of napari_aet.core, from the public functions' docstrings.

    python scripts/api_docs.py            # rewrite docs/api.md
    python scripts/api_docs.py --check    # exit 1 when docs/api.md is out of date
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "api.md"

# the entry point of each stage: these carry numpydoc Parameters and Returns (a test holds them to it)
STAGE_FUNCTIONS = [
    "io.read_tilt_series", "io.read_volume", "io.read_atoms", "io.write_volume", "io.write_atoms",
    "simulate.simulate", "simulate.project_atoms", "align.align", "reconstruct.reconstruct",
    "enhance.load_weights", "enhance.enhance_volume", "enhance.enhance_tomogram", "trace.trace_atoms",
    "refine.refine_positions", "analysis.analyze_atoms", "lattice.fit_fcc_lattice", "fourier.missing_wedge_mask",
    "metrics.match_atoms", "figures.write_figures", "render.render_spheres", "render.render_volume",
]


def public_functions(module):
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name, None)
        # a package (core.io) shows the functions of its modules that it exports, and a module
        # kept for its old name (core.vendor) those it re-exports
        if inspect.isfunction(obj) and (obj.__module__ == module.__name__ or getattr(module, "__reexport__", False) or (
                hasattr(module, "__path__") and obj.__module__.startswith(module.__name__ + "."))):
            yield name, obj


def render_page() -> str:
    import napari_aet.core as core

    lines = ["# API: `napari_aet.core`", "",
             "Generated from the docstrings by `python scripts/api_docs.py`; do not edit by hand.",
             "Lengths in Å, angles in degrees, arrays `[z, y, x]` (volumes) and `[a, v, u]` (tilt series);",
             "see [CONTRACT.md](CONTRACT.md).", ""]
    for info in sorted(pkgutil.iter_modules(core.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"napari_aet.core.{info.name}")
        functions = list(public_functions(module))
        if not functions:
            continue
        summary = (inspect.getdoc(module) or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"## `core.{info.name}`", "", summary, ""]
        for name, fn in functions:
            try:
                sig = str(inspect.signature(fn))
            except (TypeError, ValueError):
                sig = "(...)"
            lines += [f"### `{name}{sig}`", "", "```text", inspect.getdoc(fn) or "(undocumented)", "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    page = render_page()
    if "--check" in argv:
        if not OUT.exists() or OUT.read_text() != page:
            print("docs/api.md is out of date: run python scripts/api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(page)
    print(f"wrote {OUT} ({page.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
