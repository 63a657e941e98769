"""Shaded 3D renderings without a display: atoms as lit spheres (ray-cast, depth-buffered,
anti-aliased) and volumes as emission-absorption density maps.

The command line runs on cluster nodes and in worker threads, where there is no OpenGL
context for napari/vispy; these renderers are plain numpy, so ``run`` and the workbench
make the same pictures, off the GUI thread. Lengths are in Å, images are ``[row, column, rgb]``
uint8 with row 0 at the top.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .errors import AETInputError

__all__ = ["camera_basis", "view_direction", "render_spheres", "render_sphere_colourings", "sphere_extent", "render_volume",
           "trim_background"]

_LIGHT = np.array([-0.45, 0.6, 0.66])  # from the upper left, in front (screen right, up, toward viewer)


def view_direction(elevation: float, azimuth: float) -> np.ndarray:
    """Unit vector from the object towards the camera (sample frame x, y, z) for an
    ``elevation`` above the x-y plane and an ``azimuth`` from +x towards +y, in degrees.

    Parameters
    ----------
    elevation, azimuth : float
        Degrees.

    Returns
    -------
    (3,) array
    """
    e, a = np.radians(elevation), np.radians(azimuth)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def camera_basis(towards_camera: Sequence[float], up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Rows: screen right, screen up and towards the viewer, as unit vectors in the sample frame.

    ``up`` is kept as near to screen-up as the view allows (another axis is used when the
    view looks along it).

    Parameters
    ----------
    towards_camera : (3,) sequence
        Sample frame.
    up : (3,) sequence
        Sample frame.

    Returns
    -------
    (3, 3) array
    """
    w = np.asarray(towards_camera, float)
    w = w / np.linalg.norm(w)
    up = np.asarray(up, float)
    for candidate in (up, np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0])):
        u = np.cross(candidate, w)
        if np.linalg.norm(u) > 1e-3:
            break
    u = u / np.linalg.norm(u)
    return np.stack([u, np.cross(w, u), w])


def _rgb(colours, n: int) -> np.ndarray:
    from matplotlib.colors import to_rgb

    if isinstance(colours, str):
        return np.tile(to_rgb(colours), (n, 1))
    arr = np.asarray(colours)
    if arr.dtype.kind in "fiu" and arr.ndim == 2 and arr.shape[1] in (3, 4):
        return arr[:, :3].astype(float)
    return np.array([to_rgb(c) for c in colours], float)


def render_spheres(xyz: np.ndarray, radii, colours, basis: np.ndarray, size: tuple = (1000, 1000),
                   background: str = "white", supersample: int = 2, margin: float = 0.04,
                   extent: Optional[tuple] = None, depth_cue: float = 0.25) -> tuple:
    """Render atoms as lit spheres in an orthographic view.

    Parameters
    ----------
    xyz : (N, 3) array
        Atom centres in Å (sample frame x, y, z).
    radii : float or (N,) array
        Sphere radii in Å.
    colours : colour name, sequence of names, or (N, 3) RGB floats in 0-1
    basis : (3, 3) array
        :func:`camera_basis` rows: screen right, screen up, towards the viewer.
    size : (height, width) of the image in pixels.
    background : matplotlib colour name.
    supersample : rendering at this many times the size, then averaging (anti-aliasing).
    margin : free border as a fraction of the image.
    extent : ``(u_min, u_max, v_min, v_max)`` in Å on screen; by default the atoms' own, so
        that several renderings can share one scale when given the same extent.
    depth_cue : how far the farthest atoms fade towards the background (0: not at all).

    Returns
    -------
    image : (height, width, 3) uint8
    angstrom_per_pixel : float
        The image's scale, for scale bars.
    """
    images, scale = render_sphere_colourings(xyz, radii, [colours], basis, size, background, supersample, margin,
                                             extent, depth_cue)
    return images[0], scale


def render_sphere_colourings(xyz: np.ndarray, radii, colourings: Sequence, basis: np.ndarray,
                             size: tuple = (1000, 1000), background: str = "white", supersample: int = 2,
                             margin: float = 0.04, extent: Optional[tuple] = None, depth_cue: float = 0.25) -> tuple:
    """:func:`render_spheres` for several colourings of the same atoms in the same view: the
    spheres are ray-cast once and shaded once per colouring. Returns (list of images, Å per pixel).

    Parameters
    ----------
    xyz, radii, basis, size, background, supersample, margin, extent, depth_cue
        As :func:`render_spheres`.
    colourings : sequence
        One colouring (names or (N, 3) RGB) per image.

    Returns
    -------
    images : list of (height, width, 3) uint8 arrays
    angstrom_per_pixel : float
    """
    from matplotlib.colors import to_rgb

    xyz = np.asarray(xyz, float).reshape(-1, 3)
    if not np.isfinite(xyz).all():
        raise AETInputError("atom positions contain NaN or infinity: drop or fix those atoms before rendering")
    n = len(xyz)
    radii = np.broadcast_to(np.asarray(radii, float), (n,))
    h, w = (int(s) * supersample for s in size)
    cam = xyz @ np.asarray(basis, float).T  # (right, up, towards viewer)
    if extent is None:
        extent = sphere_extent(xyz, radii, basis) if n else (-1.0, 1.0, -1.0, 1.0)
    u0, u1, v0, v1 = extent
    scale = max((u1 - u0) / (w * (1 - 2 * margin)), (v1 - v0) / (h * (1 - 2 * margin)), 1e-6)  # Å per pixel
    cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
    col = (cam[:, 0] - cu) / scale + w / 2
    row = h / 2 - (cam[:, 1] - cv) / scale
    depth, normal, index = _ray_cast(row, col, radii / scale, cam[:, 2], radii, (h, w))

    bg = np.array(to_rgb(background), np.float32)
    hit = index >= 0
    nrm = normal[hit]
    light = _LIGHT / np.linalg.norm(_LIGHT)
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    diffuse = np.clip(nrm @ light, 0.0, None)[:, None]
    specular = np.clip(nrm @ half, 0.0, None)[:, None] ** 48
    rim = 0.45 + 0.55 * np.clip(nrm[:, 2:3] / 0.35, 0.0, 1.0)  # a soft dark rim reads as an outline
    fade = None
    if depth_cue > 0 and n > 1:
        zmin, zmax = float(cam[:, 2].min()), float(cam[:, 2].max())
        fade = (depth_cue * np.clip(1.0 - (depth[hit] - zmin) / max(zmax - zmin, 1e-6), 0, 1))[:, None]
    images = []
    for colours in colourings:
        base = _rgb(colours, n).astype(np.float32)[index[hit]]
        shaded = (base * (0.32 + 0.68 * diffuse) + 0.45 * specular) * rim
        if fade is not None:
            shaded = shaded + (bg - shaded) * fade
        img = np.empty((h, w, 3), np.float32)
        img[:] = bg
        img[hit] = np.clip(shaded, 0.0, 1.0)
        if supersample > 1:
            img = img.reshape(h // supersample, supersample, w // supersample, supersample, 3).mean(axis=(1, 3))
        images.append((img * 255 + 0.5).astype(np.uint8))
    return images, scale * supersample


def sphere_extent(xyz: np.ndarray, radii, basis: np.ndarray) -> tuple:
    """(u_min, u_max, v_min, v_max) in Å that the spheres cover on screen.

    Parameters
    ----------
    xyz : (n, 3) array
        Å.
    radii : float or (n,) array
        Å.
    basis : (3, 3) array
        :func:`camera_basis`.

    Returns
    -------
    tuple of 4 floats
        Å.
    """
    cam = np.asarray(xyz, float).reshape(-1, 3) @ np.asarray(basis, float).T
    r = np.broadcast_to(np.asarray(radii, float), (len(cam),))
    return (float((cam[:, 0] - r).min()), float((cam[:, 0] + r).max()),
            float((cam[:, 1] - r).min()), float((cam[:, 1] + r).max()))


def _ray_cast(row, col, rad_px, z, radii, shape) -> tuple:
    """Depth buffer of spheres at pixel centres (row, col) with pixel radii ``rad_px``: the
    nearest surface's depth (Å), its unit normal (right, up, towards viewer) and the atom index
    (-1 where no sphere is hit)."""
    h, w = shape
    depth = np.full((h, w), -np.inf, np.float32)
    normal = np.zeros((h, w, 3), np.float32)
    index = np.full((h, w), -1, np.int32)
    for i in np.argsort(z):  # far to near: fewer depth-buffer writes
        r = rad_px[i]
        r0, r1 = max(int(row[i] - r), 0), min(int(row[i] + r) + 2, h)
        c0, c1 = max(int(col[i] - r), 0), min(int(col[i] + r) + 2, w)
        if r0 >= r1 or c0 >= c1:
            continue
        dy = (row[i] - (np.arange(r0, r1) + 0.5))[:, None] / r  # up is positive
        dx = ((np.arange(c0, c1) + 0.5) - col[i])[None, :] / r
        d2 = dx * dx + dy * dy
        nz = np.sqrt(np.clip(1.0 - d2, 0.0, None))
        surface = z[i] + radii[i] * nz
        win = depth[r0:r1, c0:c1]
        hit = (d2 < 1.0) & (surface > win)
        if not hit.any():
            continue
        win[hit] = surface[hit]
        index[r0:r1, c0:c1][hit] = i
        nrm = normal[r0:r1, c0:c1]
        nrm[..., 0][hit] = np.broadcast_to(dx, d2.shape)[hit]
        nrm[..., 1][hit] = np.broadcast_to(dy, d2.shape)[hit]
        nrm[..., 2][hit] = nz[hit]
    return depth, normal, index


def render_volume(volume: np.ndarray, basis: np.ndarray, size: int = 400, colormap: str = "magma",
                  limits: Optional[tuple] = None, opacity: float = 4.0, gamma: float = 1.5,
                  mask: Optional[np.ndarray] = None, mask_colour: str = "cyan", mask_opacity: float = 0.25,
                  background: str = "black", crop: bool = False, fit: str = "diagonal") -> tuple:
    """Emission-absorption rendering of a volume (a 3D density map), no display needed.

    Parameters
    ----------
    volume : (nz, ny, nx) array
        Voxels are taken as cubes.
    basis : (3, 3) array
        :func:`camera_basis` rows: screen right, screen up, towards the viewer.
    size : int
        Image edge, pixels; the volume's diagonal fits it.
    colormap : matplotlib colour map name.
    limits : (low, high), optional
        Values mapped to the colour map's ends (default: 50th and 99.9th percentiles).
    opacity : float
        Optical depth of a full-brightness column through the whole volume.
    gamma : float
        Opacity grows as ``value ** gamma``: faint voxels stay clear.
    mask : (nz, ny, nx) array, optional
        Drawn as a translucent ``mask_colour`` haze (the missing wedge in Fourier space).
    mask_colour, mask_opacity, background : colours and the haze's optical depth.
    crop : bool
        Trim empty space (below the low limit) around the content first, so that a small
        particle fills the picture.
    fit : {"diagonal", "view"}
        What fills the image: the volume's diagonal (any view fits at one scale), or the
        volume's box as this view projects it (no empty frame; e.g. looking along an axis,
        the box's face fills the image). Both keep the same absorption per voxel.

    Returns
    -------
    image : (size, size, 3) uint8 array
    voxels_per_pixel : float
        The image's scale, for scale bars (times the voxel size: Å per pixel).
    """
    from matplotlib import colormaps
    from matplotlib.colors import to_rgb
    from scipy.ndimage import affine_transform

    vol = np.asarray(volume, np.float32)
    if vol.ndim != 3:
        raise AETInputError(f"a volume to render must be 3D [z, y, x]; got shape {vol.shape}")
    if not np.isfinite(vol).all():
        raise AETInputError("the volume contains NaN or infinity: fix it before rendering")
    lo, hi = limits if limits is not None else (float(np.percentile(vol, 50)), float(np.percentile(vol, 99.9)))
    norm = np.clip((vol - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    if crop and (norm > 0.3).any():
        idx = np.nonzero(norm > 0.3)
        box = tuple(slice(max(int(i.min()) - 2, 0), int(i.max()) + 3) for i in idx)
        norm = norm[box]
        mask = None if mask is None else np.asarray(mask)[box]
    n_in = np.array(norm.shape, float)
    m = int(size)
    n_depth = max(m // 2, 2)  # samples along the view: half the lateral density, half the cost
    b = np.asarray(basis, float)  # rows: right, up, towards viewer, in (x, y, z)
    diagonal = float(np.linalg.norm(n_in))
    if fit == "view":  # the box's projected width, height and depth (voxels)
        reach = np.abs(b) @ n_in[::-1]
        step = max(reach[0], reach[1]) / m
        n_depth = int(np.clip(np.ceil(reach[2] / (2 * step)), 2, n_depth))  # a thin slab: fewer samples
        depth_step = reach[2] / n_depth
    elif fit == "diagonal":
        step, depth_step = diagonal / m, diagonal / n_depth  # voxels per output pixel: the diagonal fits
    else:
        raise AETInputError(f"fit {fit!r} unknown; use 'diagonal' or 'view'")
    # output index (t, r, c): t along the view (far to near), r down the screen, c to the right
    to_zyx = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], float)
    cols = np.stack([b[2] * depth_step, -b[1] * step, b[0] * step], axis=1)  # sample-frame step of each output axis
    matrix = to_zyx @ cols
    offset = (n_in - 1) / 2 - matrix @ np.array([(n_depth - 1) / 2, (m - 1) / 2, (m - 1) / 2])
    shape = (n_depth, m, m)
    stack = affine_transform(norm, matrix, offset=offset, output_shape=shape, order=1, cval=0.0)
    extra = (affine_transform(np.asarray(mask, np.float32), matrix, offset=offset, output_shape=shape, order=1,
                              cval=0.0) if mask is not None else None)
    cmap = colormaps[colormap]
    alpha_unit = opacity * depth_step / diagonal  # optical depth per sample: the same per voxel in either fit
    img = np.zeros((m, m, 3), np.float32)
    transmit = np.ones((m, m, 1), np.float32)
    tint = np.array(to_rgb(mask_colour), np.float32)
    for t in range(n_depth - 1, -1, -1):  # near to far, front-to-back compositing
        v = stack[t]
        a = 1.0 - np.exp(-alpha_unit * v ** gamma)[..., None]
        img += transmit * a * cmap(v)[..., :3]
        transmit *= 1.0 - a
        if extra is not None:
            am = 1.0 - np.exp(-mask_opacity * 3.0 * depth_step / diagonal * extra[t])[..., None]
            img += transmit * am * tint
            transmit *= 1.0 - am
    img += transmit * np.array(to_rgb(background), np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), step


def trim_background(images: Sequence[np.ndarray], background: str = "black", tolerance: int = 12,
                    margin: float = 0.04) -> tuple:
    """Crop renderings of one scene to the box that holds every image's content, so that
    panels shown side by side keep one scale and position.

    Parameters
    ----------
    images : sequence of (height, width, 3) uint8 arrays
        The same size, e.g. :func:`render_volume` of several volumes in one view.
    background : matplotlib colour name
        What counts as empty.
    tolerance : int
        A pixel is content where a channel differs from the background by more than this.
    margin : float
        Border kept around the content, as a fraction of the content box's larger edge.

    Returns
    -------
    images : list of cropped arrays
    box : (row_start, row_stop, col_start, col_stop)
        The crop, in pixels of the input images.
    """
    from matplotlib.colors import to_rgb

    bg = np.round(np.array(to_rgb(background)) * 255).astype(int)
    content = np.zeros(images[0].shape[:2], bool)
    for img in images:
        content |= (np.abs(np.asarray(img, int)[..., :3] - bg) > tolerance).any(-1)
    if not content.any():
        h, w = content.shape
        return list(images), (0, h, 0, w)
    rows, cols = np.flatnonzero(content.any(1)), np.flatnonzero(content.any(0))
    pad = int(round(margin * max(rows[-1] - rows[0], cols[-1] - cols[0])))
    box = (max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, content.shape[0]),
           max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, content.shape[1]))
    return [np.asarray(img)[box[0]:box[1], box[2]:box[3]] for img in images], tuple(int(v) for v in box)
