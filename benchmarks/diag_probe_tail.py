"""The Gaussian atom model with and without a probe tail, fitted from the true atoms (issue 24).

Run:  python benchmarks/diag_probe_tail.py CASE_DIR gauss|psf

CASE_DIR is a case of ``alloy_cases.py`` (e.g. /tmp/aet-bench/alloy/S1_65-21_100000: abTEM
projections of a published Pt-Ni particle) or a ``../shared/real_ta`` area (``tilts.mrc``,
``meta.json``; interior atoms scored as "Pt", edge atoms as "Ni"). Starting from the published
positions, positions, per-species heights and one B-factor (and, with ``psf``, a detector-plane
tail ``(1 - f) δ + f G(σ)``) are fitted to every projection (Adam, 200 iterations); then, with the
positions fixed, every atom's and every empty f.c.c. site's own height is fitted at once.
Prints the R-factor, B, the tail, each species' drift from the published positions (pm), and the
per-atom heights (in Pt atoms) of Pt, Ni and empty sites.
"""

import math
import sys
from pathlib import Path
import time

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import torch
from scipy.spatial import cKDTree
from alloy_cases import load_case
from napari_aet.core.forward import AtomProjector
from napari_aet.core.species import lattice_site_candidates

torch.set_num_threads(2)
case = Path(sys.argv[1])
use_psf = sys.argv[2] == "psf"
if (case / "tilts.mrc").exists():
    import mrcfile
    import pandas as pd
    import json
    from napari_aet.core.io import TiltSeries

    meta = json.loads((case / "meta.json").read_text())
    ts = TiltSeries(mrcfile.read(case / "tilts.mrc").astype(np.float32), np.loadtxt(case / "angles.txt"), meta["pix"])
    t = pd.read_csv(case / "truth.csv")
    truth = t[["x", "y", "z"]].to_numpy()
    kind = np.where(t["edge"] == 1, "Ni", "Pt")
else:
    ts, truth, kind = load_case(case)
data = torch.as_tensor(ts.data.astype(np.float32))
data = data / data.abs().max()
px = ts.pixel_size
proj = AtomProjector(ts.angles, data.shape[1:], px)
cls = (
    torch.as_tensor((kind == "Pt").astype(int))
    if not (case / "tilts.mrc").exists()
    else torch.ones(len(kind), dtype=torch.long)
)
a, nv, nu = data.shape
kv = torch.fft.fftfreq(nv, d=px)[:, None]
ku = torch.fft.rfftfreq(nu, d=px)[None, :]
k2 = kv**2 + ku**2


def psf(img, f, st):
    if not use_psf:
        return img
    t = (1 - f) + f * torch.exp(-2 * math.pi**2 * st**2 * k2)
    return torch.fft.irfft2(torch.fft.rfft2(img) * t, s=(nv, nu))


pos0 = torch.as_tensor(truth, dtype=torch.float32)
shift = torch.zeros_like(pos0, requires_grad=True)
log_h = torch.tensor([math.log(0.2), 0.0], requires_grad=True)
log_s = torch.tensor(math.log(0.35), requires_grad=True)
lf = torch.tensor(-1.0, requires_grad=True)
ls = torch.tensor(math.log(1.0), requires_grad=True)
# heights start by lstsq
with torch.no_grad():
    cols = [proj.project(pos0, (cls == k).float(), torch.full((len(pos0),), 0.35)).reshape(-1) for k in (0, 1)]
    h, *_ = torch.linalg.lstsq(torch.stack(cols, 1), data.reshape(-1, 1))
    log_h.copy_(torch.log(h[:, 0].clamp(min=1e-4)))
norm = float((data**2).sum())
babs = float(data.abs().sum())


def model(sh=None):
    return psf(
        proj.project(pos0 + shift, torch.exp(log_h)[cls], torch.exp(log_s).expand(len(pos0))),
        torch.sigmoid(lf),
        torch.exp(ls),
    )


params = [{"params": [shift], "lr": 0.01}, {"params": [log_h, log_s] + ([lf, ls] if use_psf else []), "lr": 0.02}]
opt = torch.optim.Adam(params)
t0 = time.time()
for k in range(200):
    opt.zero_grad()
    loss = ((model() - data) ** 2).sum() / norm
    loss.backward()
    opt.step()
    if k % 50 == 0:
        print(k, float(loss), flush=True)
with torch.no_grad():
    r = float((model() - data).abs().sum() / babs)
    drift = torch.linalg.norm(shift, dim=1).numpy() * 100
print(
    f"{'psf' if use_psf else 'gauss'}: R={r:.4f} loss={float(loss):.4e} h={torch.exp(log_h).tolist()} B={8 * math.pi**2 * float(torch.exp(log_s)) ** 2:.2f}"
    f" f={float(torch.sigmoid(lf)):.3f} sig_tail={float(torch.exp(ls)):.3f} drift rms pm Pt={np.sqrt(np.mean(drift[kind == 'Pt'] ** 2)):.1f} Ni={np.sqrt(np.mean(drift[kind == 'Ni'] ** 2)):.1f} t={time.time() - t0:.0f}s"
)
# per-atom heights at fixed positions, with empty lattice sites added
pos = (pos0 + shift).detach().numpy()
sites = lattice_site_candidates(truth, kind == "Pt")
sites = sites[cKDTree(truth).query(sites)[0] > 1.2] if len(sites) else np.zeros((0, 3))
every = torch.as_tensor(np.concatenate([pos, sites]), dtype=torch.float32)
hh = torch.cat([torch.exp(log_h)[cls].detach(), torch.full((len(sites),), 0.05)]).clone().requires_grad_(True)
opt = torch.optim.Adam([hh], lr=0.01)
sig = torch.exp(log_s).detach().expand(len(every))
f0, s0 = torch.sigmoid(lf).detach(), torch.exp(ls).detach()
for k in range(150):
    opt.zero_grad()
    loss = ((psf(proj.project(every, hh, sig), f0, s0) - data) ** 2).sum() / norm
    loss.backward()
    opt.step()
hn = hh.detach().numpy() / float(torch.exp(log_h)[1])
grp = np.r_[kind, np.full(len(sites), "empty")]
for g in ("Pt", "Ni", "empty"):
    v = hn[grp == g]
    if len(v):
        print(
            g, len(v), "pct 5/25/50/75/95", np.round(np.percentile(v, [5, 25, 50, 75, 95]), 3), "std", round(v.std(), 3)
        )
ni, em = hn[grp == "Ni"], hn[grp == "empty"]
if len(em):
    thr = np.linspace(0, 0.5, 101)
    err = [((ni < t).mean() + (em >= t).mean()) / 2 for t in thr]
    print("Ni vs empty: best balanced error", round(min(err), 3), "at", thr[int(np.argmin(err))])
