"""Forward projection of volumes and its exact adjoint, in torch (CPU or CUDA).

The geometry is the contract's (``geometry.euler_zyz_matrix``): a sample point ``r`` lands at
detector ``(u, v, w) = R r`` and the projection integrates along ``w``. Lengths here are in
voxels (volume and detector share the pixel size).

The projector is voxel-driven: every voxel's value goes to the detector position of its
centre and is shared among the nearest pixels with bilinear weights that sum to one. So each
projection holds exactly the volume's total intensity at every angle, and a voxel's
projected centroid is exactly where the geometry puts it (ray-driven sampling at unit steps
gains or loses ~1% of the intensity depending on the angle, which biases angle refinement).
The backprojection is its exact transpose (bilinear interpolation of the detector at each
voxel's projected centre), so ``<A x, y> = <x, A^T y>`` to rounding.

Two paths compute the same operator:

* single-axis tilts about y (Euler ``(0, t, 0)``): ``v = y`` exactly, so every y-slice is
  projected by the same sparse matrix ((projections x u) by (z, x)); forward and adjoint
  are one sparse-dense product each, with the y-slices as columns (144³ x 21: ~20 ms on
  2 CPU cores);
* any Euler angles, ``general="sheared"`` (the default): shear-warp. Per projection the
  volume is sliced across the axis closest to the beam; each slice is shifted (bilinear, in
  the slice plane) to where the beam carries it onto the plane through the centre, the
  slices are summed, and that plane is splatted onto the detector by the remaining 2D affine
  map (bilinear). Each voxel still lands whole and centred where the geometry puts it, the
  adjoint is still exact; the kernel is two bilinear steps instead of one, so projections of
  sharp features differ from the direct path by a few % (norm), not in position or total.
  The work is dense slice arithmetic with no 3D coordinate grid (151 x 77 x 151 voxels, 46
  projections: about 4x faster than the direct path on 2 CPU cores, see BENCHMARKS.md);
* any Euler angles, ``general="splat"``: per projection, ``grid_sample`` at every voxel's
  detector position (adjoint) and its transpose (forward), in slabs of z so that no
  intermediate exceeds ``max_chunk_bytes``: the direct voxel-driven operator, kept as the
  reference.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from . import geometry
from .errors import AETInputError

__all__ = ["Projector", "resolve_device"]


def resolve_device(device: str = "auto"):
    """The torch device to run on.

    Parameters
    ----------
    device : str or torch.device
        ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'`` or ``'cuda:N'``.

    Returns
    -------
    torch.device
    """
    import torch

    device = str(device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AETInputError("--device cuda was asked for but no CUDA GPU is available; use --device cpu or auto")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise AETInputError(f"device {device!r} unknown; use auto, cpu or cuda")


class Projector:
    """Parallel-beam projector for a volume ``[z, y, x]`` and projections ``[a, v, u]``.

    Parameters
    ----------
    volume_shape : (nz, ny, nx) voxels.
    angles : tilts (N,) or Z-Y-Z Euler angles (N, 3), degrees.
    detector_shape : (nv, nu) pixels; default (ny, nx).
    device, dtype : torch device (or 'auto'/'cpu'/'cuda') and float dtype.
    max_chunk_bytes : bound on the largest intermediate array of the ``splat`` path.
    force_general : use the general path even for single-axis tilts (tests, comparisons).
    general : ``"sheared"`` (fast, default) or ``"splat"`` (direct) for the general path.
    """

    def __init__(
        self,
        volume_shape: Sequence[int],
        angles,
        detector_shape: Optional[Sequence[int]] = None,
        device="cpu",
        dtype=None,
        max_chunk_bytes: int = 256 * 2**20,
        force_general: bool = False,
        general: str = "sheared",
    ):
        import torch

        self.volume_shape = tuple(int(s) for s in volume_shape)
        nz, ny, nx = self.volume_shape
        self.detector_shape = tuple(int(s) for s in (detector_shape or (ny, nx)))
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = dtype or torch.float32
        self.max_chunk_bytes = int(max_chunk_bytes)
        if general not in ("sheared", "splat"):
            raise AETInputError(f"general projector {general!r} unknown; use sheared or splat")
        self.general = general
        self.set_angles(angles, force_general)

    # ------------------------------------------------------------------ set-up

    def set_angles(self, angles, force_general: bool = False) -> None:
        """Change the projection angles (degrees), e.g. during angle refinement."""
        self.euler = geometry.as_euler_angles(angles)
        self.rotations = geometry.euler_zyz_matrices(self.euler)
        self.single_axis = geometry.is_single_axis(self.euler) and not force_general
        if self.single_axis and self.detector_shape[0] != self.volume_shape[1]:
            self.single_axis = False
        self._cache = {}

    @property
    def n_projections(self) -> int:
        return len(self.rotations)

    # -------------------------------------------------------- single-axis path

    def _single_axis_matrices(self):
        """Sparse (A*nu, nz*nx) projection matrix of the (z, x) plane, and its transpose.

        Voxel (z, x) lands at ``u = x cos t + z sin t`` and is shared between the two
        nearest detector pixels with linear weights. For tilts about y every y-slice is
        projected by the same matrix, so the whole volume is one sparse-dense product with
        the y-slices as columns.
        """
        import warnings

        import scipy.sparse as sp
        import torch

        if "csr" in self._cache:
            return self._cache["csr"]
        nz, ny, nx = self.volume_shape
        nu = self.detector_shape[1]
        n_a = self.n_projections
        t = np.deg2rad(self.euler[:, 1])
        z, x = np.meshgrid(np.arange(nz) - nz // 2, np.arange(nx) - nx // 2, indexing="ij")
        col = np.arange(nz * nx)
        rows, cols, vals = [], [], []
        for a in range(n_a):
            u = (x * np.cos(t[a]) + z * np.sin(t[a])).ravel() + nu // 2
            u0 = np.floor(u).astype(np.int64)
            f = u - u0
            for du, wt in ((0, 1 - f), (1, f)):
                ui = u0 + du
                ok = (ui >= 0) & (ui < nu) & (wt > 0)
                rows.append(a * nu + ui[ok])
                cols.append(col[ok])
                vals.append(wt[ok])
        np_dtype = np.float64 if self.dtype.itemsize == 8 else np.float32
        m = sp.csr_matrix(
            (np.concatenate(vals).astype(np_dtype), (np.concatenate(rows), np.concatenate(cols))),
            shape=(n_a * nu, nz * nx),
        )
        mt = m.T.tocsr()

        def to_torch(a):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.sparse_csr_tensor(
                    torch.from_numpy(a.indptr.astype(np.int64)), torch.from_numpy(a.indices.astype(np.int64)),
                    torch.from_numpy(a.data), size=a.shape, dtype=self.dtype, device=self.device,
                )

        self._cache["csr"] = (to_torch(m), to_torch(mt))
        return self._cache["csr"]

    def _forward_single_axis(self, vol):
        import torch

        nz, ny, nx = self.volume_shape
        nu = self.detector_shape[1]
        m, _ = self._single_axis_matrices()
        cols = vol.permute(0, 2, 1).reshape(nz * nx, ny)  # one column per y-slice
        return torch.sparse.mm(m, cols).view(self.n_projections, nu, ny).permute(0, 2, 1).contiguous()

    def _adjoint_single_axis(self, proj):
        import torch

        nz, ny, nx = self.volume_shape
        nu = self.detector_shape[1]
        _, mt = self._single_axis_matrices()
        cols = proj.permute(0, 2, 1).reshape(self.n_projections * nu, ny)
        return torch.sparse.mm(mt, cols).view(nz, nx, ny).permute(0, 2, 1).contiguous()

    # ------------------------------------------------------ general path, sheared

    def _shear_plan(self, a: int) -> dict:
        """Slicing axis, per-slice offsets and bilinear weights, and the warp grid of projection ``a``."""
        import torch

        key = ("shear", a)
        if key in self._cache:
            return self._cache[key]
        r = self.rotations[a]
        n = self.volume_shape
        nv, nu = self.detector_shape
        comp = (2, 1, 0)  # volume axis (z, y, x) -> sample component (x, y, z)
        d = r[2]  # the beam direction in the sample frame
        k = int(np.argmax([abs(d[comp[ax]]) for ax in range(3)]))
        p, q = (ax for ax in range(3) if ax != k)
        c = [np.arange(m) - m // 2 for m in n]
        shift_p = -c[k] * d[comp[p]] / d[comp[k]]  # where each slice's voxels meet the central plane
        shift_q = -c[k] * d[comp[q]] / d[comp[k]]
        ip, iq = np.floor(shift_p).astype(np.int64), np.floor(shift_q).astype(np.int64)
        fp, fq = shift_p - ip, shift_q - iq
        hi, wi = n[p] + int(ip.max() - ip.min()) + 1, n[q] + int(iq.max() - iq.min()) + 1
        # plane pixel (i, j) sits at in-plane coordinates (cp[i], cq[j]); the warp maps it to (u, v)
        cp = np.arange(hi) + ip.min() + c[p][0]
        cq = np.arange(wi) + iq.min() + c[q][0]
        u = r[0, comp[p]] * cp[:, None] + r[0, comp[q]] * cq[None, :] + nu // 2
        v = r[1, comp[p]] * cp[:, None] + r[1, comp[q]] * cq[None, :] + nv // 2
        grid = np.stack([u * (2.0 / max(nu - 1, 1)) - 1, v * (2.0 / max(nv - 1, 1)) - 1], -1)[None]
        as_t = lambda x: torch.as_tensor(x, dtype=self.dtype, device=self.device)  # noqa: E731
        plan = {
            "axes": (k, p, q), "plane": (hi, wi), "grid": as_t(grid),
            "offsets": list(zip((ip - ip.min()).tolist(), (iq - iq.min()).tolist())),
            "fractions": (as_t(fp)[:, None, None], as_t(fq)[:, None, None]),  # bilinear, per slice
        }
        self._cache[key] = plan
        return plan

    def _forward_sheared(self, vol):
        import torch

        nv, nu = self.detector_shape
        out = torch.empty((self.n_projections, nv, nu), dtype=self.dtype, device=self.device)
        zero = torch.zeros((1, 1, nv, nu), dtype=self.dtype, device=self.device)
        views = {}  # the volume with each slicing axis first, contiguous (slow strided reads otherwise)
        buffers = {}  # work buffers per slicing axis, reused across projections
        for a in range(self.n_projections):
            plan = self._shear_plan(a)
            if plan["axes"] not in views:
                views[plan["axes"]] = vol.permute(*plan["axes"]).contiguous()
            v = views[plan["axes"]]
            nk, n_p, n_q = v.shape
            fp, fq = plan["fractions"]
            # each slice shared between 2 x 2 plane pixels: linear along q, then along p (in place)
            if plan["axes"] not in buffers:
                buffers[plan["axes"]] = (torch.empty((nk, n_p, n_q + 1), dtype=self.dtype, device=self.device),
                                         torch.empty((nk, n_p + 1, n_q + 1), dtype=self.dtype, device=self.device))
            half, spread = buffers[plan["axes"]]
            half[:, :, n_q:].zero_()
            torch.mul(v, 1 - fq, out=half[:, :, :n_q])
            half[:, :, 1:].addcmul_(v, fq)
            spread[:, n_p:].zero_()
            torch.mul(half, 1 - fp, out=spread[:, :n_p])
            spread[:, 1:].addcmul_(half, fp)
            plane = torch.zeros(plan["plane"], dtype=self.dtype, device=self.device)
            for s, (i, j) in enumerate(plan["offsets"]):
                plane[i:i + n_p + 1, j:j + n_q + 1] += spread[s]
            g_in, _ = torch.ops.aten.grid_sampler_2d_backward(plane[None, None], zero, plan["grid"], 0, 0, True,
                                                              [True, False])
            out[a] = g_in[0, 0]
        return out

    def _adjoint_sheared(self, proj):
        import torch
        import torch.nn.functional as F

        acc = {}
        for a in range(self.n_projections):
            plan = self._shear_plan(a)
            axes = plan["axes"]
            if axes not in acc:
                acc[axes] = torch.zeros([self.volume_shape[ax] for ax in axes], dtype=self.dtype, device=self.device)
            o = acc[axes]
            nk, n_p, n_q = o.shape
            plane = F.grid_sample(proj[a][None, None], plan["grid"], mode="bilinear", padding_mode="zeros",
                                  align_corners=True)[0, 0]
            spread = torch.stack([plane[i:i + n_p + 1, j:j + n_q + 1] for i, j in plan["offsets"]])
            fp, fq = plan["fractions"]
            spread = torch.lerp(spread[:, :, :n_q], spread[:, :, 1:], fq)
            o += torch.lerp(spread[:, :n_p], spread[:, 1:], fp)
        out = torch.zeros(self.volume_shape, dtype=self.dtype, device=self.device)
        for axes, o in acc.items():
            out += o.permute(*np.argsort(axes).tolist())
        return out

    # ------------------------------------------------- general path, direct splat

    def _z_chunks(self):
        nz, ny, nx = self.volume_shape
        per_slab = ny * nx * 2 * self.dtype.itemsize * 3  # grid + sampled values
        step = max(1, self.max_chunk_bytes // per_slab)
        return [slice(k, min(nz, k + step)) for k in range(0, nz, step)]

    def _voxel_grid(self, a: int, zs: slice):
        """Normalised detector positions (1, nz_chunk*ny, nx, 2) of the voxels of slab ``zs``."""
        import torch

        nz, ny, nx = self.volume_shape
        nv, nu = self.detector_shape
        r = torch.as_tensor(self.rotations[a], dtype=self.dtype, device=self.device)
        z = torch.arange(zs.start, zs.stop, dtype=self.dtype, device=self.device) - nz // 2
        y = torch.arange(ny, dtype=self.dtype, device=self.device) - ny // 2
        x = torch.arange(nx, dtype=self.dtype, device=self.device) - nx // 2
        zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
        u = r[0, 0] * xx + r[0, 1] * yy + r[0, 2] * zz + nu // 2
        v = r[1, 0] * xx + r[1, 1] * yy + r[1, 2] * zz + nv // 2
        grid = torch.stack([u * (2.0 / max(nu - 1, 1)) - 1, v * (2.0 / max(nv - 1, 1)) - 1], -1)
        return grid.reshape(1, -1, nx, 2)

    def _forward_general(self, vol):
        """Voxel-driven splatting: each voxel shared among 4 detector pixels (bilinear)."""
        import torch

        nz, ny, nx = self.volume_shape
        nv, nu = self.detector_shape
        out = torch.zeros((self.n_projections, nv, nu), dtype=self.dtype, device=self.device)
        zero = torch.zeros((1, 1, nv, nu), dtype=self.dtype, device=self.device)
        for a in range(self.n_projections):
            for zs in self._z_chunks():
                grid = self._voxel_grid(a, zs)
                g_out = vol[zs].reshape(1, 1, -1, nx)
                # the transpose of bilinear sampling is bilinear splatting: grid_sample's input gradient
                g_in, _ = torch.ops.aten.grid_sampler_2d_backward(g_out, zero, grid, 0, 0, True, [True, False])
                out[a] += g_in[0, 0]
        return out

    def _adjoint_general(self, proj):
        """Backprojection: each voxel reads the bilinearly interpolated detector value."""
        import torch
        import torch.nn.functional as F

        nz, ny, nx = self.volume_shape
        out = torch.zeros(self.volume_shape, dtype=self.dtype, device=self.device)
        for a in range(self.n_projections):
            img = proj[a][None, None]
            for zs in self._z_chunks():
                vals = F.grid_sample(img, self._voxel_grid(a, zs), mode="bilinear", padding_mode="zeros", align_corners=True)
                out[zs] += vals.reshape(zs.stop - zs.start, ny, nx)
        return out

    # ------------------------------------------------------------------ public

    def forward(self, vol):
        """Projections ``[a, v, u]`` of a volume ``[z, y, x]`` (torch tensor on this device)."""
        vol = self._as_tensor(vol, self.volume_shape, "volume")
        if self.single_axis:
            return self._forward_single_axis(vol)
        return self._forward_sheared(vol) if self.general == "sheared" else self._forward_general(vol)

    def adjoint(self, proj):
        """Backprojection ``A^T p`` (exact adjoint of :meth:`forward`) of projections ``[a, v, u]``."""
        proj = self._as_tensor(proj, (self.n_projections,) + self.detector_shape, "projections")
        if self.single_axis:
            return self._adjoint_single_axis(proj)
        return self._adjoint_sheared(proj) if self.general == "sheared" else self._adjoint_general(proj)

    def _as_tensor(self, arr, shape, what):
        import torch

        t = torch.as_tensor(arr, dtype=self.dtype, device=self.device)
        if tuple(t.shape) != tuple(shape):
            raise AETInputError(f"{what} has shape {tuple(t.shape)}, expected {tuple(shape)}")
        return t
