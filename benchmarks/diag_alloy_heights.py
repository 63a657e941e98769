"""Diagnosis of light atoms on an abTEM-projected Pt-Ni particle (issue 24): where the Ni atoms
are lost, and how well each position's implied height (its intensity as the projections want
it, :func:`napari_aet.core.species.implied_heights`) tells Ni, Pt and empty positions apart.

Run:  python benchmarks/diag_alloy_heights.py CASE_DIR RUN_DIR

CASE_DIR is a case of ``alloy_cases.py`` (e.g. /tmp/aet-bench/alloy/S1_65-21_100000) and RUN_DIR
a ``napari-aet run`` result folder of it (its ``tomogram_enhanced.mrc`` is traced). The
tracer's two-class split and the tomogram's first species guess give the start; it is refined
on the working projections (10% held out, one B-factor), then the residual tomogram's peaks and
the empty f.c.c. sites next to the heavy atoms are measured against that model. Every group is
split by what the published model has there (Ni, Pt, or nothing within 0.8 Å).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import mrcfile
import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alloy_cases import load_case  # noqa: E402

from napari_aet.core.confidence import atom_model_projections, split_free_projections  # noqa: E402
from napari_aet.core.pipeline import _first_species  # noqa: E402
from napari_aet.core.refine import refine_positions  # noqa: E402
from napari_aet.core.species import implied_heights, lattice_site_candidates, light_atom_candidates  # noqa: E402
from napari_aet.core.trace import trace_atoms  # noqa: E402


def chain_state(case: Path, run: Path) -> SimpleNamespace:
    """The species step's start on a case: the run's U-Net tomogram traced (two classes, first
    species guess), refined on the working projections (one B), its model projections, the
    residual peaks and the empty f.c.c. sites next to the heavy atoms."""
    ts, truth, kind = load_case(case)
    free = split_free_projections(ts.angles, 0.1)
    data, angles = ts.data[~free], np.asarray(ts.angles)[~free]
    vol = mrcfile.read(run / "tomogram_enhanced.mrc").astype(np.float32)
    traced = trace_atoms(vol, ts.pixel_size, n_classes=2)
    table = _first_species(traced.table, traced.metadata, ("Ni", "Pt"))
    table = table[table["atom"] == 1].reset_index(drop=True)
    cls = np.where(table["species"] == "Ni", 0, 1)
    ref = refine_positions(table[["x", "y", "z"]].to_numpy(), cls, data, angles, ts.pixel_size, iterations=150,
                           share_b_factor=True)
    pos, h, b = ref.positions, ref.heights, ref.b_factors
    print("refined heights", h, "B", b, flush=True)
    model = atom_model_projections(pos, cls, h, b, angles, data.shape[1:], ts.pixel_size, "cpu")
    residual = light_atom_candidates(pos, cls, h, b, data, angles, ts.pixel_size, vol.shape, model=model)
    sites = lattice_site_candidates(pos, cls == 1)
    sites = sites[cKDTree(pos).query(sites)[0] > 1.0]
    return SimpleNamespace(ts=ts, truth=truth, kind=kind, data=data, angles=angles, cls=cls, pos=pos, h=h, b=b,
                           model=model, residual=residual, sites=sites)


def main():
    st = chain_state(Path(sys.argv[1]), Path(sys.argv[2]))
    ts, truth, kind, data, angles, cls, pos, h, b = st.ts, st.truth, st.kind, st.data, st.angles, st.cls, st.pos, \
        st.h, st.b
    model, residual, sites = st.model, st.residual, st.sites
    every = np.concatenate([pos, residual, sites])
    every_cls = np.r_[cls, np.zeros(len(residual) + len(sites), int)]
    height, err = implied_heights(every, every_cls, h, b, data, angles, ts.pixel_size,
                                  in_model=np.arange(len(every)) < len(pos), model=model)
    d, i = cKDTree(truth).query(every)
    label = np.where(d < 0.8, kind[i], "none")
    group = np.r_[np.where(cls == 0, "traced as Ni", "traced as Pt"), np.full(len(residual), "residual peak"),
                  np.full(len(sites), "empty lattice site")]
    print("group | truth | n | implied height 5/25/50/75/95th percentile (Pt atom = 1) | median error")
    for g in ("traced as Ni", "traced as Pt", "residual peak", "empty lattice site"):
        for t in ("Ni", "Pt", "none"):
            sel = (group == g) & (label == t)
            if sel.any():
                pct = np.round(np.percentile(height[sel], [5, 25, 50, 75, 95]) / h[1], 3)
                print(f"{g} | {t} | {int(sel.sum())} | {pct.tolist()} | {np.median(err[sel]) / h[1]:.3f}")
    reached = np.zeros(len(truth), bool)
    for subset in (group.startswith("traced"), group != "empty lattice site", np.ones(len(every), bool)):
        dd, ii = cKDTree(truth).query(every[subset])
        reached[:] = False
        reached[ii[dd < 0.8]] = True
        print(f"true Ni within 0.8 Å of a position ({int(subset.sum())} positions): "
              f"{reached[kind == 'Ni'].mean():.3f}; Pt {reached[kind == 'Pt'].mean():.3f}")


if __name__ == "__main__":
    main()
