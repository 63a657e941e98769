"""Implied heights against joint heights on the chain's own state (issue 24).

Run:  python benchmarks/diag_joint_heights.py CASE_DIR RUN_DIR

CASE_DIR is a case of ``alloy_cases.py`` (abTEM projections of a published Pt-Ni particle) and
RUN_DIR a ``napari-aet run`` of it (its ``tomogram_enhanced.mrc`` is traced). As the species step
starts: the tracer's two classes and the first species guess, refined on the working projections
(Gaussian atoms, one B); candidates at the empty f.c.c. sites next to the heavy atoms and at
residual-tomogram peaks. Then every position's height is measured two ways: one at a time into
the residual of the others (:func:`napari_aet.core.species.implied_heights`) and all at once
(per-atom heights and small moves fitted together, as
:func:`napari_aet.core.species.joint_heights` does). Heights (in Pt atoms) are printed by group
and by what the published model has there, with recall, Ni recall and precision of keeping every
position above a threshold.
"""

import sys
from pathlib import Path
import time

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mrcfile
import numpy as np
import torch
from scipy.spatial import cKDTree
from alloy_cases import load_case
from napari_aet.core.confidence import atom_model_projections, split_free_projections
from napari_aet.core.forward import AtomProjector, b_factor_to_sigma
from napari_aet.core.pipeline import _first_species
from napari_aet.core.refine import refine_positions
from napari_aet.core.species import implied_heights, lattice_site_candidates, light_atom_candidates, empty_distance_for
from napari_aet.core.trace import trace_atoms

torch.set_num_threads(1)
case, run = Path(sys.argv[1]), Path(sys.argv[2])
ts, truth, kind = load_case(case)
free = split_free_projections(ts.angles, 0.1)
data, angles = ts.data[~free], np.asarray(ts.angles)[~free]
vol = mrcfile.read(run / "tomogram_enhanced.mrc").astype(np.float32)
traced = trace_atoms(vol, ts.pixel_size, n_classes=2)
table = _first_species(traced.table, traced.metadata, ("Ni", "Pt"))
table = table[table["atom"] == 1].reset_index(drop=True)
cls = np.where(table["species"] == "Ni", 0, 1)
ref = refine_positions(
    table[["x", "y", "z"]].to_numpy(), cls, data, angles, ts.pixel_size, iterations=150, share_b_factor=True
)
pos, h, b = ref.positions, ref.heights, ref.b_factors
print("refined", h, b, flush=True)
model = atom_model_projections(pos, cls, h, b, angles, data.shape[1:], ts.pixel_size, "cpu")
residual = light_atom_candidates(pos, cls, h, b, data, angles, ts.pixel_size, vol.shape, model=model)
sites = lattice_site_candidates(pos, cls == 1)
sites = sites[cKDTree(pos).query(sites)[0] > empty_distance_for(2.0)]
far = cKDTree(sites).query(residual)[0] > 1.0
cand = np.concatenate([sites, residual[far]])
every = np.concatenate([pos, cand])
every_cls = np.r_[cls, np.zeros(len(cand), int)]
in_model = np.arange(len(every)) < len(pos)
t0 = time.time()
ih, ie = implied_heights(every, every_cls, h, b, data, angles, ts.pixel_size, in_model=in_model, model=model)
print("implied", f"{time.time() - t0:.0f}s", flush=True)
# joint: every position in the model, per-atom heights free (start: class height, candidates at half a Ni)
proj = AtomProjector(angles, data.shape[1:], ts.pixel_size)
sig = torch.full((len(every),), b_factor_to_sigma(b[1]))
p_t = torch.as_tensor(every, dtype=torch.float32)
hh = (
    torch.as_tensor(np.r_[[h[c] for c in cls], np.full(len(cand), 0.5 * h[0])], dtype=torch.float32)
    .clone()
    .requires_grad_(True)
)
shift = torch.zeros_like(p_t, requires_grad=True)
d_t = torch.as_tensor(data)
norm = float((d_t**2).sum())
opt = torch.optim.Adam([{"params": [hh], "lr": 0.01}, {"params": [shift], "lr": 0.005}])
t0 = time.time()
for k in range(150):
    opt.zero_grad()
    loss = ((proj.project(p_t + shift, hh, sig) - d_t) ** 2).sum() / norm
    loss.backward()
    opt.step()
    if k % 50 == 0:
        print(k, float(loss.detach()), flush=True)
print("joint", f"{time.time() - t0:.0f}s", flush=True)
jh = hh.detach().numpy()
final = (p_t + shift).detach().numpy()
d, i = cKDTree(truth).query(final)
label = np.where(d < 0.8, kind[i], "none")
group = np.r_[
    np.where(cls == 0, "traced Ni", "traced Pt"), np.full(len(sites), "site"), np.full(int(far.sum()), "residual")
]
for name, hv in (("implied", ih), ("joint", jh)):
    hv = hv / h[1]
    print(name)
    for g in ("traced Ni", "traced Pt", "site", "residual"):
        for t in ("Ni", "Pt", "none"):
            sel = (group == g) & (label == t)
            if sel.any():
                print(
                    f"  {g} | {t} | {int(sel.sum())} | {np.round(np.percentile(hv[sel], [5, 25, 50, 75, 95]), 3).tolist()}"
                )
    # decision at a threshold: kept = hv > thr; score vs truth
    for thr in (0.06, 0.09, 0.12):
        keep = hv > thr
        dd, ii = cKDTree(truth).query(final[keep])
        tp = np.unique(ii[dd < 1.0])
        print(
            f"  thr {thr}: kept {keep.sum()}, recall {len(tp) / len(truth):.3f}, Ni recall {np.isin(np.flatnonzero(kind == 'Ni'), tp).mean():.3f}, precision {(dd < 1.0).mean():.3f}"
        )
