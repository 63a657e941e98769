"""napari reader: tilt series (MRC/ST/ALI, TIFF, NPY, MAT, Velox EMD, DM3/DM4) with their
angles, and MRC volumes. Files that hold no 3D stack (a 2D or colour TIFF, a single MRC image,
a corrupt or truncated MRC) are declined: ``napari_get_reader`` returns None for them, looking
at headers only, and says why in napari's notifications."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ._layers import tilt_series_layer, volume_layer
from .core import io

# .h5/.hdf5 are too generic to claim in napari; the command line reads EMD 1.0 files with them
_SUFFIXES = tuple(e for e in io.TILT_EXTENSIONS if e not in (".h5", ".hdf5"))


def napari_get_reader(path):
    """Return a reader for one file we can read as a tilt series or tomogram, else None
    (napari then tries other plugins)."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(str(path))
    if path.suffix.lower() not in _SUFFIXES or not path.is_file():
        return None
    problem = why_not_a_stack(path)
    if problem:
        _notify(f"napari-aet did not open {path.name}: {problem}", warning=True)
        return None
    return read_path


def _notify(message: str, warning: bool = False) -> None:
    """One line in napari's notification area (where a declined or surprising read is explained)."""
    from napari.utils.notifications import show_info, show_warning

    (show_warning if warning else show_info)(message)


def why_not_a_stack(path) -> Optional[str]:
    """Why a file cannot be read as a tilt series or tomogram, told from its header alone; None
    when it looks like one (or only reading it can tell, as for MATLAB files)."""
    path = Path(path)
    ext = path.suffix.lower()
    problem = _mrc_problem(path) if ext in io.MRC_EXTENSIONS else None
    if problem is None and ext in io.TIFF_EXTENSIONS:
        problem = _tiff_problem(path)
    if problem is not None:
        return problem
    shape = io.stack_shape(path)
    if shape is None:
        return None
    if shape == ():
        return f"its header cannot be read (not a valid {ext} file, or it is corrupt)"
    size = "×".join(str(n) for n in shape)
    if len(shape) == 2 or (len(shape) == 3 and min(shape) < 2):
        return f"it holds a single 2D image ({size}); a tilt series or tomogram is a 3D stack"
    if len(shape) != 3:
        return f"it holds {len(shape)}D data ({size}); a tilt series or tomogram is one 3D stack"
    return None


def _mrc_problem(path: Path) -> Optional[str]:
    """A corrupt or truncated MRC file, from its 1024-byte header and the file's size."""
    import warnings

    import mrcfile
    from mrcfile.utils import dtype_from_mode

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # permissive: problems are reported below, in one line
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                h = mrc.header
                nx, ny, nz, mode, extra = int(h.nx), int(h.ny), int(h.nz), int(h.mode), int(h.nsymbt)
                map_id = bytes(h.map)
    except Exception as exc:  # shorter than a header, unreadable
        return f"not a valid MRC file ({(str(exc).strip().splitlines() or [type(exc).__name__])[0]})"
    if map_id != b"MAP ":
        return "not a valid MRC file (no 'MAP ' identifier in its header: corrupt, or another format)"
    try:
        itemsize = dtype_from_mode(mode).itemsize
    except ValueError:
        return f"not a valid MRC file (unknown data mode {mode} in its header)"
    if min(nx, ny, nz) < 1:
        return f"its header gives an empty shape ({nz}×{ny}×{nx})"
    need = 1024 + extra + nx * ny * nz * itemsize * (0.5 if mode == 101 else 1)
    have = path.stat().st_size
    if have < need:
        return f"the file is truncated ({have:,} bytes; its header describes {nz}×{ny}×{nx} values, {int(need):,} bytes)"
    return None


def _tiff_problem(path: Path) -> Optional[str]:
    """A colour (RGB) TIFF: samples per pixel, not a stack of projections."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, shape = series.axes, series.shape
    except Exception:
        return None  # stack_shape reports an unreadable file
    if axes.endswith("S"):
        return f"it is a colour image ({'×'.join(str(n) for n in shape)}, {axes}); a tilt series or tomogram is a 3D grey stack"
    return None


def classify(path) -> str:
    """'tilt_series' or 'volume' for a file, from its type, header and the angles beside it."""
    from .core.vendor import find_mdoc

    path = Path(path)
    ext = path.suffix.lower()
    if ext in (".st", ".ali") or ext in io.VENDOR_EXTENSIONS:
        return "tilt_series"
    if io.find_angles_file(path, include_generic=False) is not None or find_mdoc(path) is not None:
        return "tilt_series"
    if ext in io.MRC_EXTENSIONS:
        import mrcfile

        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            return "tilt_series" if int(mrc.header.ispg) == 0 else "volume"
    return "tilt_series" if io.find_angles_file(path) is not None else "volume"


def read_path(path):
    """Layers for one file (errors surface in napari as one-line notifications)."""
    if isinstance(path, (list, tuple)):
        path = path[0]
    path = Path(path)
    if classify(path) == "tilt_series":
        ts = io.read_tilt_series(path, require_angles=False, require_pixel_size=False)
        return [tilt_series_layer(ts, name=f"{path.stem} (tilt series)")]
    vol = io.read_volume(path, require_pixel_size=False)
    if path.suffix.lower() not in io.MRC_EXTENSIONS:  # no header to tell: say why it is a tomogram
        _notify(f"napari-aet read {path.name} as a tomogram: no tilt angles beside it (looked for "
                f"{path.stem}.rawtlt/.tlt/.txt/.csv, angles.* and a SerialEM .mdoc); for a tilt series put its angles there, "
                "or use Plugins > napari AET > Load tilt series")
    return [volume_layer(vol, name=path.stem)]
