"""Tilt series and tomograms: read from any supported format with their angles and pixel size, written as MRC with the voxel size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from .. import geometry
from ..guards import check_hdf5_self_contained
from ..locks import note_input
from .angles import _normalize_angles, find_angles_file, read_angles, write_angles
from .files import _check_readable, _fail, atomic_path
from .mat import _read_mat_stack
from .mrc import _read_mrc
from .npy import _read_npy
from .pixels import _check_square_pixels, _check_values, _resolve_pixel_size, check_pixel_size
from .records import MRC_EXTENSIONS, TIFF_EXTENSIONS, TILT_EXTENSIONS, VENDOR_EXTENSIONS, PathLike, TiltSeries, Volume
from .tiff import _read_tiff


def _read_array(path: Path, what: str, variable=None):
    _check_readable(path, what)
    ext = path.suffix.lower()
    if ext in MRC_EXTENSIONS:
        return _read_mrc(path, what)
    if ext in TIFF_EXTENSIONS:
        return _read_tiff(path, what)
    if ext == ".npy":
        return _read_npy(path, what)
    if ext == ".mat":
        return _read_mat_stack(path, variable)
    if ext in VENDOR_EXTENSIONS:
        from .vendor import read_vendor_stack

        data, px, tilts, info = read_vendor_stack(path)
        return data, px, {"vendor": info, "vendor_tilts": tilts, "pixel_sizes": info.pop("pixel_sizes", None)}
    _fail(
        f"{path}: unknown {what} file type {ext or '(no extension)'}; use "
        f"{', '.join(TILT_EXTENSIONS)}"
    )


def stack_shape(path: PathLike) -> Optional[tuple]:
    """A file's array shape from its header alone, without reading the data (lazily for
    Velox/DigitalMicrograph files); None when that cannot be told cheaply, () when the file is
    unreadable. What a viewer asks before claiming a file.

    Parameters
    ----------
    path : path

    Returns
    -------
    tuple or None
    """
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext in MRC_EXTENSIONS:
            import mrcfile

            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                h = mrc.header
                return (int(h.nz), int(h.ny), int(h.nx))
        if ext in TIFF_EXTENSIONS:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return tuple(tif.series[0].shape)
        if ext == ".npy":
            return tuple(np.load(path, mmap_mode="r").shape)
        if ext in (".dm3", ".dm4", ".emd"):
            from .vendor import _rsciio_reader

            check_hdf5_self_contained(path)  # rosettasciio reads metadata even lazily
            sigs = _rsciio_reader(ext)(str(path), lazy=True)
            return max((tuple(s["data"].shape) for s in sigs), key=len)
    except Exception:
        return ()  # unreadable: not ours to open
    return None


def read_tilt_series(
    path: PathLike,
    angles=None,
    pixel_size: Optional[float] = None,
    stack_axis: int = 0,
    angle_units: str = "deg",
    variable: Optional[str] = None,
    require_angles: bool = True,
    require_pixel_size: bool = True,
    angle_convention: str = "zyz",
    tilt_axis_angle: float = 0.0,
    transpose_projections: bool = False,
    angle_column=None,
) -> TiltSeries:
    """Read a tilt series ``[a, v, u]`` and its angles.

    Parameters
    ----------
    path : MRC/ST/ALI, TIFF, NPY, MAT (v5 or v7.3), Velox/EMD (.emd, .h5) or DigitalMicrograph
        (.dm3/.dm4) file, projections along ``stack_axis``.
    angles : angles file, array, or None to take them from the file's own metadata (Velox
        stage alpha per frame, an FEI1/FEI2 MRC extended header), a SerialEM mdoc beside it
        (``name.mrc.mdoc``/``name.mdoc``), or an angles file beside it (same stem with
        ``.rawtlt``/``.tlt``/``.txt``, else ``angles.*``), in that order.
    pixel_size : Å; required when neither the file nor its mdoc has one.
    angle_convention, tilt_axis_angle : how to read the angles
        (:func:`napari_aet.core.geometry.convert_angles`); they are returned as the contract's.
    transpose_projections : swap each projection's rows and columns after moving the stack
        axis first: RESIRE/GENFIRE MATLAB stacks are ``[x, y, projection]``, so they read
        as the contract's ``[a, y, x]`` with ``stack_axis=2, transpose_projections=True``.
    angle_column : the tilt-angle column of an angles table (a header name or a number from
        1; :func:`read_angles`).

    Returns
    -------
    TiltSeries
        ``metadata['angles_source']`` names where the angles came from.
    """
    from ..geometry import ANGLE_CONVENTIONS, convert_angles

    path = Path(path)
    if angle_convention not in ANGLE_CONVENTIONS:
        _fail(f"angle convention {angle_convention!r} unknown; use one of {', '.join(ANGLE_CONVENTIONS)}")
    raw, header_px, extra = _read_array(path, "tilt series", variable)
    if raw.ndim != 3:
        _fail(
            f"{path} holds an array of shape {raw.shape}, not a 3D stack of projections; "
            "save all projections in one (n, rows, cols) stack"
        )
    if stack_axis not in (0, 1, 2, -1):
        _fail(f"stack axis {stack_axis} is not 0, 1 or 2; give the axis that indexes projections")
    data = np.moveaxis(raw, stack_axis, 0)
    if transpose_projections:
        data = data.transpose(0, 2, 1)
    data = _check_values(data, path, "tilt series")

    angles_arr, source = None, None
    if angles is None:
        angles_arr, source, angles, header_px = _angles_from_metadata(path, data.shape[0], extra, header_px,
                                                                       require_angles)
    else:
        source = f"file {Path(angles).name}" if isinstance(angles, (str, os.PathLike)) else "given array"
    if angles is not None and angles_arr is None:
        angles_arr = read_angles(angles, units=angle_units, column=angle_column)
    if angles_arr is not None:
        if angles_arr.shape[0] != data.shape[0]:
            hint = ""
            if stack_axis == 0 and angles_arr.shape[0] in raw.shape[1:]:
                ax = raw.shape.index(angles_arr.shape[0])
                hint = f" (axis {ax} has {angles_arr.shape[0]}: projections last, as MATLAB stores them? pass --stack-axis {ax})"
            _fail(
                f"{angles_arr.shape[0]} angles for {data.shape[0]} projections in {path}{hint}; "
                "give one angle per projection"
            )
        try:
            angles_arr = convert_angles(angles_arr, angle_convention, tilt_axis_angle)
        except ValueError as exc:
            _fail(f"angles from {source}: {exc}")
        extra.update(angles_source=source, angle_convention=angle_convention)
        if angle_convention == "tilt-axis":
            extra["tilt_axis_angle_deg"] = float(tilt_axis_angle)
    _check_square_pixels(extra, path, pixel_size)
    px = _resolve_pixel_size(header_px, pixel_size, path, require_pixel_size)
    return TiltSeries(np.ascontiguousarray(data), angles_arr, px, str(path), extra)


def _angles_from_metadata(path: Path, n: int, extra: dict, header_px, require_angles: bool) -> tuple:
    """Angles a tilt series carries itself: vendor metadata, an FEI MRC extended header, a
    SerialEM .mdoc beside it, or an angles file beside it (in that order). Returns (angles
    or None, where they came from, an angles file to read or None, the pixel size so far)."""
    from . import vendor

    angles_arr, source, angles = None, None, None
    meta_tilts = extra.pop("vendor_tilts", None)
    header = vendor.mrc_header_tilts(path, n) if path.suffix.lower() in MRC_EXTENSIONS else None
    mdoc = vendor.find_mdoc(path)
    if meta_tilts is not None:
        angles_arr, source = np.asarray(meta_tilts, float), f"{extra['vendor']['reader']} metadata (stage alpha of each frame)"
    elif header is not None:
        angles_arr, source = header
    elif mdoc is not None:
        note_input(mdoc)
        angles_arr, mdoc_px, mdoc_axis = vendor.mdoc_tilts(mdoc)
        source = f"SerialEM mdoc {mdoc.name}"
        if header_px is None and mdoc_px:
            header_px = mdoc_px
        if mdoc_axis is not None:
            extra["mdoc_tilt_axis_angle_deg"] = mdoc_axis
    else:
        found = find_angles_file(path)
        if found is None and require_angles:
            _fail(f"no angles for {path}: put {path.stem}.rawtlt (degrees, one a line) beside it or pass --angles")
        if found is not None:
            angles, source = found, f"file {found.name} beside the tilt series"
    if angles_arr is not None:
        angles_arr = _normalize_angles(angles_arr, source)
    return angles_arr, source, angles, header_px


def write_tilt_series(path: PathLike, tilt_series: TiltSeries, write_angles_file: bool = False) -> None:
    """Write a tilt series to MRC (image stack, pixel size in the header), TIFF or NPY.

    Parameters
    ----------
    path : path
        ``.mrc``, ``.tif``/``.tiff`` or ``.npy``, written atomically.
    tilt_series : TiltSeries
    write_angles_file : bool
        Also write ``<stem>.rawtlt`` beside it (degrees, one a line).
    """
    path = Path(path)
    data = np.asarray(tilt_series.data, dtype=np.float32)
    px = check_pixel_size(tilt_series.pixel_size)
    ext = path.suffix.lower()
    with atomic_path(path) as tmp:
        if ext in MRC_EXTENSIONS:
            import mrcfile

            with mrcfile.new(tmp, overwrite=True) as mrc:
                mrc.set_data(data)
                mrc.set_image_stack()
                mrc.voxel_size = px
        elif ext in TIFF_EXTENSIONS:
            import tifffile

            tifffile.imwrite(tmp, data, imagej=True, resolution=(1 / px, 1 / px), metadata={"unit": "angstrom"})
        elif ext == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, data)
        else:
            _fail(f"{path}: cannot write tilt series as {ext}; use .mrc, .tif or .npy")
    if write_angles_file and tilt_series.angles is not None:
        write_angles(path.with_suffix(".rawtlt"), tilt_series.angles)


def looks_like_tilt_series(path: PathLike, extra: Optional[dict] = None) -> Optional[str]:
    """Why ``path`` is a tilt series rather than a tomogram, or None: an MRC2014 image stack,
    a tilt-stack extension (.st, .ali) or an angles file of the same name beside it.

    Parameters
    ----------
    path : path
    extra : dict, optional
        Metadata already read from the file.

    Returns
    -------
    str or None
        The reason, for a one-line message.
    """
    path = Path(path)
    if path.suffix.lower() in (".st", ".ali"):
        return f"its extension {path.suffix} is IMOD's for tilt stacks"
    if extra and extra.get("mrc_image_stack"):
        return "its MRC header marks it as an image stack"
    for ext in (".rawtlt", ".tlt"):  # not .txt/.csv: an atoms table may share the tomogram's name
        if path.with_suffix(ext).exists():
            return f"tilt angles ({path.with_suffix(ext).name}) lie beside it"
    return None


def read_volume(path: PathLike, pixel_size: Optional[float] = None, require_pixel_size: bool = True,
                refuse_tilt_series: bool = False) -> Volume:
    """Read a volume ``[z, y, x]`` from MRC (voxel size from its header), NPY or TIFF.

    Parameters
    ----------
    path : path
    pixel_size : float, optional
        Voxel size, Å; overrides the header (required where the file has none).
    require_pixel_size : bool
        Refuse a file without a voxel size (the command line), or accept it (viewers).
    refuse_tilt_series : bool
        Refuse a file that is a tilt series (:func:`looks_like_tilt_series`).

    Returns
    -------
    Volume
        ``data`` float32 ``[z, y, x]`` and ``pixel_size`` (Å).
    """
    path = Path(path)
    raw, header_px, extra = _read_array(path, "volume")
    if refuse_tilt_series:
        why = looks_like_tilt_series(path, extra)
        if why:
            _fail(f"{path} is a tilt series, not a tomogram ({why}); reconstruct it first: "
                  f"napari-aet reconstruct {path} -o TOMOGRAM.mrc")
    if raw.ndim != 3:
        _fail(f"{path} holds an array of shape {raw.shape}, not a 3D volume; give a (z, y, x) volume")
    data = _check_values(raw, path, "volume")
    _check_square_pixels(extra, path, pixel_size, axes="xyz")
    px = _resolve_pixel_size(header_px, pixel_size, path, require_pixel_size)
    return Volume(np.ascontiguousarray(data), px, str(path))


def write_volume(path: PathLike, data, pixel_size: float) -> None:
    """Write a float32 volume to MRC with its voxel size and a centred origin, atomically.

    Parameters
    ----------
    path : path
        ``.mrc``; written to a temporary name, then renamed.
    data : (nz, ny, nx) array
    pixel_size : float
        Voxel size, Å.
    """
    import mrcfile

    path = Path(path)
    if path.suffix.lower() not in MRC_EXTENSIONS:
        _fail(f"{path}: volumes are written as .mrc; change the extension")
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 3:
        _fail(f"volume to write has shape {data.shape}; it must be 3D (z, y, x)")
    px = check_pixel_size(pixel_size)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(data)
            mrc.set_volume()
            mrc.voxel_size = px
            nz, ny, nx = data.shape
            mrc.header.origin.x = geometry.origin_angstrom(nx, px)
            mrc.header.origin.y = geometry.origin_angstrom(ny, px)
            mrc.header.origin.z = geometry.origin_angstrom(nz, px)
