"""Implied heights against joint heights on the chain's own state (issue 24).

Run:  python benchmarks/diag_joint_heights.py CASE_DIR RUN_DIR

CASE_DIR is a case of ``alloy_cases.py`` (abTEM projections of a published Pt-Ni particle) and
RUN_DIR a ``napari-aet run`` of it (its ``tomogram_enhanced.mrc`` is traced). As the species step
starts: the tracer's two classes and the first species guess, refined on the working projections
(Gaussian atoms, one B); candidates at the empty f.c.c. sites next to the heavy atoms and at
residual-tomogram peaks. Then every position's height is measured two ways: one at a time into
the residual of the others (:func:`napari_aet.core.species.implied_heights`) and all at once
(per-atom heights and small moves fitted together:
:func:`napari_aet.core.species.joint_heights`). Heights (in Pt atoms) are printed by group
and by what the published model has there, with recall, Ni recall and precision of keeping every
position above a threshold.
"""

import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diag_alloy_heights import chain_state  # noqa: E402

from napari_aet.core.species import implied_heights, joint_heights  # noqa: E402


def main():
    st = chain_state(Path(sys.argv[1]), Path(sys.argv[2]))
    truth, kind, cls, h = st.truth, st.kind, st.cls, st.h
    far = cKDTree(st.sites).query(st.residual)[0] > 1.0
    cand = np.concatenate([st.sites, st.residual[far]])
    every = np.concatenate([st.pos, cand])
    in_model = np.arange(len(every)) < len(st.pos)
    t0 = time.time()
    ih, _ = implied_heights(every, np.r_[cls, np.zeros(len(cand), int)], h, st.b, st.data, st.angles,
                            st.ts.pixel_size, in_model=in_model, model=st.model)
    print("implied", f"{time.time() - t0:.0f}s", flush=True)
    t0 = time.time()  # every position in the model: class heights to start, candidates at half a Ni atom
    jh, final = joint_heights(every, np.r_[[h[c] for c in cls], np.full(len(cand), 0.5 * h[0])], st.b[1], st.data,
                              st.angles, st.ts.pixel_size)
    print("joint", f"{time.time() - t0:.0f}s", flush=True)
    d, i = cKDTree(truth).query(final)
    label = np.where(d < 0.8, kind[i], "none")
    group = np.r_[np.where(cls == 0, "traced Ni", "traced Pt"), np.full(len(st.sites), "site"),
                  np.full(int(far.sum()), "residual")]
    for name, hv in (("implied", ih), ("joint", jh)):
        hv = hv / h[1]
        print(name)
        for g in ("traced Ni", "traced Pt", "site", "residual"):
            for t in ("Ni", "Pt", "none"):
                sel = (group == g) & (label == t)
                if sel.any():
                    pct = np.round(np.percentile(hv[sel], [5, 25, 50, 75, 95]), 3).tolist()
                    print(f"  {g} | {t} | {int(sel.sum())} | {pct}")
        for thr in (0.06, 0.09, 0.12):  # keep every position above a threshold, scored against the truth
            keep = hv > thr
            dd, ii = cKDTree(truth).query(final[keep])
            tp = np.unique(ii[dd < 1.0])
            ni = np.isin(np.flatnonzero(kind == "Ni"), tp).mean()
            print(f"  thr {thr}: kept {keep.sum()}, recall {len(tp) / len(truth):.3f}, Ni recall {ni:.3f}, "
                  f"precision {(dd < 1.0).mean():.3f}")


if __name__ == "__main__":
    main()
