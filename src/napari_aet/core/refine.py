"""Refinement of traced atom positions against the measured tilt series (torch, CPU or CUDA).

The atomic model: every atom a 3D Gaussian; atoms of one class share a height and a
B-factor. Its projections are computed analytically (a projected Gaussian is a 2D Gaussian,
integrated over each pixel with erf), differentiably in the positions, heights and widths.
Positions, per-class heights and B-factors are fitted to the tilt series by Adam on the
sum of squared differences; the R-factor ``sum|model - data| / sum|data|`` is reported before
and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import geometry
from .errors import AETInputError, Reporter

from .forward import AtomProjector, GaussianAtoms  # noqa: E402,F401  (AtomProjector kept importable from here)
from .probe_tail import MAX_TAIL_FRACTION, ProbeTail, apply_probe_tail

__all__ = ["AtomProjector", "RefinementResult", "refine_positions"]


@dataclass
class RefinementResult:
    positions: np.ndarray  # (n, 3) Å
    heights: dict  # class -> integrated intensity of one atom
    b_factors: dict  # class -> Å²
    r_factor_before: float
    r_factor_after: float
    iterations: int
    seconds: float
    history: list = field(default_factory=list)
    probe_tail: Optional[ProbeTail] = None  # the detector-plane tail the model was fitted with

    def summary(self) -> dict:
        return {
            "r_factor_before": self.r_factor_before, "r_factor_after": self.r_factor_after,
            "heights": self.heights, "b_factors_A2": self.b_factors, "iterations": self.iterations,
            "seconds": round(self.seconds, 3), "loss_history": self.history,
            "probe_tail": None if self.probe_tail is None else self.probe_tail.summary(),
        }


TAIL_START_SIGMA = 1.0  # Å; the scan's tail width (abTEM's 300 kV, 25 mrad probe fits 0.97 Å)
TAIL_SCAN = (0.0, 0.15, 0.3, 0.45)  # tail fractions tried at the start
MIN_TAIL_SIGMA = 0.6  # Å; on tail-free projections a narrower "tail" fitted 10% (a second core width)


def _start_scan(design, b_data, sigma0, n_classes, fit_b_factor, tail_fractions, tail_sigma, pixel_size, check):
    """Per-class width scale, tail fraction and heights with the least squared misfit (heights by
    linear least squares for each width; the tail, linear in the columns, costs only FFTs)."""
    import torch

    best = None
    for scale in (0.6, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.0) if fit_b_factor else (1.0,):
        sig = np.full(n_classes, sigma0 * scale)
        cols = design(sig)
        for f in tail_fractions:
            a_mat = cols if f == 0 else apply_probe_tail(cols, f, tail_sigma, pixel_size)
            a_mat = a_mat.reshape(n_classes, -1).T
            h, *_ = torch.linalg.lstsq(a_mat, b_data[:, None])
            h = h[:, 0].clamp(min=1e-6)
            loss = float(((a_mat @ h - b_data) ** 2).sum())
            if best is None or loss < best[0]:
                best = (loss, sig, h, f)
        check()
    return best[1:]


# Long: one gradient loop over positions, heights and B-factors with its step-size control and
# reset of atoms that wander; the parts share the optimiser state, split up they would pass it around.
def refine_positions(
    positions,
    classes,
    tilts,
    angles,
    pixel_size: float,
    iterations: int = 150,
    initial_b: Optional[float] = None,
    step_size: float = 0.01,
    max_step: float = 0.5,
    device="cpu",
    progress=None,
    cancel=None,
    model=None,
    share_b_factor: bool = False,
    fit_b_factor: bool = True,
    fit_probe_tail: bool = False,
    probe_tail: Optional[ProbeTail] = None,
) -> RefinementResult:
    """Refine atom positions (Å), per-class heights and B-factors against a tilt series.

    Parameters
    ----------
    positions : (n, 3) x, y, z in Å (sample frame).
    classes : (n,) class label of each atom (e.g. the tracer's k-means class; 1 class for Pt).
    tilts : (a, nv, nu) aligned tilt series; angles : tilts (a,) or Euler (a, 3), degrees.
    iterations : Adam iterations; step_size : Å, the positions' initial learning rate.
    max_step : Å; an atom that moves further is reset to its start (it was not an atom the
        model can explain, e.g. two overlapping peaks).
    share_b_factor : one B-factor for every class (heights stay per class): for alloys, where
        a free width lets a faint class absorb its bright neighbours' misfit.
    fit_b_factor : False keeps the B-factor at ``initial_b`` (heights and positions are fitted).
    fit_probe_tail : fit the probe's tail (:mod:`napari_aet.core.probe_tail`: a fraction of
        every atom's intensity spread by a Gaussian of its own width) with the atoms.
    probe_tail : a fixed tail to see the atoms through (ignored when ``fit_probe_tail``).
    model : forward model with a differentiable twin (default
        :class:`~napari_aet.core.forward.GaussianAtoms`; heights and B-factors are fitted).

    Returns
    -------
    RefinementResult
        Refined ``positions`` (n, 3) Å, per-class ``heights`` and ``b_factors`` (Å²), the
        re-projection R-factor before and after, iterations, seconds and the ``probe_tail``.
    """
    import time

    import torch

    from .projector import resolve_device

    from .validate import check_int, check_number

    iterations = check_int(iterations, "refinement iterations", 0, 100_000)
    check_number(step_size, "refinement step size", 0.0, 1.0, unit="Å", lo_open=True)
    check_number(max_step, "largest refinement move", 0.0, 10.0, unit="Å", lo_open=True)
    dev = resolve_device(device) if isinstance(device, str) else device
    pos0 = np.asarray(positions, np.float64).reshape(-1, 3)
    if len(pos0) == 0:
        raise AETInputError("no atoms to refine; trace the tomogram first")
    data = torch.as_tensor(np.asarray(tilts, np.float32), device=dev)
    if data.ndim != 3 or len(geometry.as_euler_angles(angles)) != data.shape[0]:
        raise AETInputError(f"tilt series of shape {tuple(data.shape)} does not match {len(np.atleast_1d(angles))} angles")
    cls = np.asarray(classes, int)
    labels, inverse = np.unique(cls, return_inverse=True)
    t0 = time.perf_counter()
    proj = (model or GaussianAtoms()).torch_projector(angles, data.shape[1:], pixel_size, device=dev)
    inv = torch.as_tensor(inverse, device=dev)
    inv_b = torch.zeros_like(inv) if share_b_factor else inv
    pos = torch.tensor(pos0, dtype=torch.float32, device=dev)
    rep = Reporter(iterations + 1, progress, cancel)

    # Start: per-class width (and tail) by a scan, heights by linear least squares.
    def design(sigma_by_class):
        sig = torch.as_tensor(sigma_by_class, dtype=torch.float32, device=dev)[inv_b]
        return torch.stack([proj.project(pos, (inv == k).float(), sig) for k in range(len(labels))])

    sigma0 = np.sqrt((initial_b or 5.0) / (8 * np.pi**2))
    fixed_tail = None if fit_probe_tail else probe_tail
    tail_sigma = fixed_tail.sigma if fixed_tail else TAIL_START_SIGMA
    scan = TAIL_SCAN if fit_probe_tail else ((fixed_tail.fraction,) if fixed_tail else (0.0,))
    sig_start, h_start, f_start = _start_scan(design, data.reshape(-1), sigma0, len(labels), fit_b_factor, scan,
                                              tail_sigma, pixel_size, rep.check)
    log_h = torch.log(h_start.detach().clone()).requires_grad_(True)
    log_s = torch.log(torch.as_tensor(sig_start, dtype=torch.float32, device=dev)).requires_grad_(fit_b_factor)
    # the tail as a logit fraction (kept off 0 so it can grow back) and a log width
    logit_f = torch.logit(torch.tensor(max(f_start, 0.02), device=dev)).requires_grad_(fit_probe_tail)
    log_t = torch.log(torch.tensor(tail_sigma, device=dev)).requires_grad_(fit_probe_tail)
    with_tail = fit_probe_tail or (fixed_tail is not None and fixed_tail.fraction > 0)

    def tail_fraction():
        return torch.sigmoid(logit_f).clamp(max=MAX_TAIL_FRACTION)

    def tail_width():  # Å; a narrower tail trades with the atoms' own width (the B-factor)
        return torch.exp(log_t).clamp(MIN_TAIL_SIGMA, 4.0)
    shift = torch.zeros_like(pos, requires_grad=True)
    b_abs = float(data.abs().sum())

    def model():
        img = proj.project(pos + shift, torch.exp(log_h)[inv], torch.exp(log_s)[inv_b])
        return apply_probe_tail(img, tail_fraction(), tail_width(), pixel_size) if with_tail else img

    with torch.no_grad():
        r_before = float((model() - data).abs().sum() / b_abs)
    rep.step(f"R = {r_before:.4f}")
    # Adam with a learning rate per parameter block: positions move in Å steps of
    # ``step_size`` (decaying), heights and widths in relative steps. (L-BFGS stalled here:
    # the positions' gradients are orders of magnitude below the heights'.)
    opt = torch.optim.Adam([
        {"params": [shift], "lr": step_size},
        {"params": [log_h, log_s] if fit_b_factor else [log_h], "lr": 0.01},
        {"params": [logit_f, log_t] if fit_probe_tail else [], "lr": 0.05},
    ])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iterations, 1), eta_min=step_size * 0.02)
    history = []
    norm = float((data**2).sum())
    for k in range(iterations):
        opt.zero_grad()
        loss = ((model() - data) ** 2).sum() / norm
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        rep.step(f"loss {history[-1]:.3e}")
    with torch.no_grad():
        moved = torch.linalg.norm(shift, dim=1) > max_step
        shift[moved] = 0
        r_after = float((model() - data).abs().sum() / b_abs)
        final = (pos + shift).cpu().numpy().astype(np.float64)
        heights = {int(labels[k]): float(torch.exp(log_h[k])) for k in range(len(labels))}
        b_factors = {int(labels[k]): float(8 * np.pi**2 * torch.exp(log_s[0 if share_b_factor else k]) ** 2)
                     for k in range(len(labels))}
        tail = ProbeTail(float(tail_fraction()), float(tail_width())) if with_tail else None
    return RefinementResult(final, heights, b_factors, r_before, r_after, iterations, time.perf_counter() - t0, history,
                            tail)
