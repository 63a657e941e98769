"""Reading and writing tilt series, angles, volumes and atoms tables per the contract.

Every reader checks what it reads and raises :class:`~napari_aet.core.errors.AETInputError`
with one line naming the problem and the fix; every writer writes to a temporary file in the
destination folder and renames it into place, so a failed write never leaves a half file
where the user's data was.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from . import geometry
from .errors import AETInputError
from .guards import SIDE_FILE_MAX_BYTES, check_hdf5_self_contained, check_read_size, check_regular_file, read_side_file
from .locks import check_not_input, note_input

__all__ = [
    "stack_shape",
    "ATOM_COLUMNS",
    "TiltSeries",
    "Volume",
    "atomic_path",
    "read_tilt_series",
    "write_tilt_series",
    "read_angles",
    "write_angles",
    "find_angles_file",
    "read_volume",
    "write_volume",
    "read_atoms",
    "write_atoms",
    "empty_atoms_table",
    "atoms_metadata_path",
    "check_pixel_size",
    "write_json",
    "looks_like_tilt_series",
    "read_sidecar",
    "sidecar_owner",
]

PathLike = Union[str, os.PathLike]

ATOM_COLUMNS = [
    "x", "y", "z", "intensity", "atom", "species", "fcc", "surface", "facet", "layer",
    "ux", "uy", "uz", "exx", "eyy", "ezz", "exy", "exz", "eyz",
]
_INT_COLUMNS = ("atom", "fcc", "surface")
_STR_COLUMNS = ("species", "facet")

MRC_EXTENSIONS = (".mrc", ".st", ".ali", ".rec", ".map")
TIFF_EXTENSIONS = (".tif", ".tiff")
ANGLE_TEXT_EXTENSIONS = (".txt", ".csv", ".rawtlt", ".tlt")
ANGLE_EXTENSIONS = ANGLE_TEXT_EXTENSIONS + (".npy", ".mat")
VENDOR_EXTENSIONS = (".emd", ".dm3", ".dm4", ".h5", ".hdf5")  # Velox/EMD 1.0 and DigitalMicrograph
TILT_EXTENSIONS = MRC_EXTENSIONS + TIFF_EXTENSIONS + (".npy", ".mat") + VENDOR_EXTENSIONS
ASE_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".cif": "cif", ".vasp": "vasp", ".poscar": "vasp",
               ".pdb": "proteindatabank", ".xsf": "xsf", ".lmp": "lammps-data"}
# formats that keep only species and positions (no per-atom columns); PDB rounds to 1 pm
POSITIONS_ONLY_FORMATS = ("proteindatabank", "xsf", "lammps-data")

# Plausible pixel sizes for atomic-resolution tomography, in Å: below 0.1 Å is a header in nm
# (0.0357 for 0.357 Å) or m; above 20 Å no atom is resolved.
PIXEL_SIZE_RANGE = (0.1, 20.0)


@dataclass
class TiltSeries:
    """A tilt series ``data[a, v, u]`` (float32) with its angles (degrees) and pixel size (Å).

    ``pixel_size`` is None only when a viewer opened a file without one (shown in pixels).
    """

    data: np.ndarray
    angles: Optional[np.ndarray]
    pixel_size: Optional[float]
    source: Optional[str] = None
    metadata: dict = field(default_factory=dict)

    @property
    def n_projections(self) -> int:
        return int(self.data.shape[0])


@dataclass
class Volume:
    """A volume ``data[z, y, x]`` (float32) with its voxel size (Å)."""

    data: np.ndarray
    pixel_size: Optional[float]
    source: Optional[str] = None


# --------------------------------------------------------------------------- helpers


def _fail(message: str) -> None:
    raise AETInputError(message)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_readable(path: Path, what: str, max_bytes: Optional[int] = None) -> None:
    note_input(path)  # an input of the running command: no output may replace it
    if not path.exists():
        _fail(f"{what} file {path} does not exist; check the path")
    if path.is_dir():
        _fail(f"{what} path {path} is a folder; give a file")
    # a FIFO would block, a link to /dev/zero would read until memory runs out
    if check_regular_file(path, f"{what} file", max_bytes).st_size == 0:
        _fail(f"{what} file {path} is empty (0 bytes); re-export it")


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    with _UMASK_LOCK:  # reading the umask means setting it: keep other threads out meanwhile
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Parameters
    ----------
    path : path
        The file to write.

    Yields
    ------
    Path
        A temporary name in the same folder (removed when the block fails).
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        _fail(f"output folder {path.parent} does not exist; create it first")
    check_not_input([path])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    with contextlib.suppress(OSError):  # mkstemp makes 0600; a result file follows the umask like any other
        os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _strict(o):
    """NaN/Inf become null: JSON has no such numbers, and strict readers refuse them."""
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    if isinstance(o, (np.ndarray, np.floating, np.integer, np.bool_, Path)):
        return _strict(_json_default(o))
    return o


def write_json(path: PathLike, obj) -> None:
    """Write ``obj`` as indented, strict JSON (NaN/Inf as null), atomically.

    Parameters
    ----------
    path : path
    obj : JSON-serialisable object (numpy values converted)
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_strict(obj), indent=2, default=_json_default, allow_nan=False) + "\n")


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def check_pixel_size(pixel_size, source: str = "") -> float:
    """Validate a pixel size in Å, rejecting zero, NaN and values that look like nm, m or pm.

    Parameters
    ----------
    pixel_size : float
        Å.
    source : str
        Where it came from, for the error message.

    Returns
    -------
    float
        Å.
    """
    where = f" for {source}" if source else ""
    try:
        p = float(pixel_size)
    except (TypeError, ValueError):
        _fail(f"pixel size{where} is {pixel_size!r}, not a number; give it in Å, e.g. 0.357")
    if not np.isfinite(p) or p <= 0:
        _fail(f"pixel size{where} is {p}; it must be a positive number of Å, e.g. 0.357")
    lo, hi = PIXEL_SIZE_RANGE
    if p < lo:
        _fail(f"pixel size{where} is {p:g} Å, too small for atomic tomography (nm or m given?); give it in Å, e.g. 0.357")
    if p > hi:
        _fail(f"pixel size{where} is {p:g} Å, too large for atomic tomography (pm given?); give it in Å, e.g. 0.357")
    return p


def _resolve_pixel_size(header_size: Optional[float], given: Optional[float], path: Path, required: bool = True):
    if given is not None:
        given = check_pixel_size(given, str(path))
        if header_size and abs(header_size - given) > 1e-3 * given:
            warnings.warn(
                f"{path}: header pixel size {header_size:g} Å overridden by the given {given:g} Å",
                stacklevel=3,
            )
        return given
    if header_size is None or header_size <= 0:
        if not required:
            return None
        _fail(f"{path} has no pixel size in its header; pass it in Å (e.g. --pixel-size 0.357)")
    try:
        return check_pixel_size(header_size, str(path))
    except AETInputError as exc:
        reason = str(exc).split(";")[0]
        _fail(f"{reason} (read from its header); pass the right value with --pixel-size in Å, e.g. 0.357")


def _check_square_pixels(extra: dict, path: Path, given: Optional[float], axes: str = "xy") -> None:
    """Refuse pixels (voxels) whose header sizes differ between ``axes``: read with the x size
    alone they would stretch the data. A given pixel size overrides the header, with a warning."""
    found = extra.pop("pixel_sizes", None) or {}
    sizes = {a: v for a, v in found.items() if a in axes and v and v > 0}
    if len(sizes) < 2 or max(sizes.values()) <= min(sizes.values()) * (1 + 1e-3):
        return
    listed = ", ".join(f"{a} {v:g} {found.get('unit', 'Å')}" for a, v in sizes.items())
    if given is None:
        _fail(f"{path} has non-square {'voxels' if len(axes) == 3 else 'pixels'} in its header ({listed}); resample "
              "it to equal sizes first (e.g. IMOD newstack or ImageJ Scale), or pass --pixel-size to read it with one")
    warnings.warn(f"{path}: header pixel sizes differ ({listed}); read with the given {given:g} Å along every axis",
                  stacklevel=3)


def _check_values(data: np.ndarray, path, what: str) -> np.ndarray:
    if data.size == 0:
        _fail(f"{what} in {path} has no values (shape {data.shape}); re-export it")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        _fail(f"{what} in {path} has data type {data.dtype}, not real numbers; export real-valued data")
    data = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        _fail(
            f"{what} in {path} has {int(bad.sum())} NaN/Inf values; replace them "
            "(e.g. with 0) before loading"
        )
    return data


# ------------------------------------------------------------------------ arrays


def _mrc_layout(path: Path):
    """Data shape, dtype and extended-header bytes from an MRC file's 1024-byte header alone, or
    None where the header cannot say (mrcfile then reports the problem)."""
    import mrcfile.utils as mu
    from mrcfile.dtypes import HEADER_DTYPE

    with open(path, "rb") as f:
        raw = f.read(HEADER_DTYPE.itemsize)
    if len(raw) < HEADER_DTYPE.itemsize:
        return None
    try:
        order = mu.byte_order_from_machine_stamp(np.frombuffer(raw, dtype=HEADER_DTYPE)[0]["machst"])
    except ValueError:
        order = "<"
    header = np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order)).reshape(()).view(np.recarray)
    try:
        dtype, shape = mu.data_dtype_from_header(header), mu.data_shape_from_header(header)
    except (ValueError, ZeroDivisionError):
        return None
    return shape, dtype, int(header.nsymbt)


def _check_mrc_size(path: Path, what: str) -> None:
    """Refuse, from the header alone, an MRC file shorter than its header says or too big for memory."""
    layout = _mrc_layout(path)
    if layout is None:
        return
    shape, dtype, ext = layout
    if min(shape) < 0 or ext < 0:
        _fail(f"cannot read {path} as MRC (its header gives a negative size: {shape}, extended header {ext} bytes); "
              "re-export the file")
    need, have = 1024 + ext + math.prod(shape) * dtype.itemsize, path.stat().st_size
    if need > have:
        _fail(f"cannot read {path} as MRC (truncated or corrupt: its header describes {'x'.join(map(str, shape))} values of "
              f"{dtype} and {ext} bytes of extended header, {need:,} bytes, but the file has {have:,}); re-export the file")
    check_read_size(shape, dtype.itemsize, path, f"a {what}")


def _read_mrc(path: Path, what: str = "stack"):
    import mrcfile

    _check_mrc_size(path, what)
    try:
        with mrcfile.open(path, mode="r", permissive=False) as mrc:
            data = np.array(mrc.data)
            vx, vy, vz = (float(v) for v in (mrc.voxel_size.x, mrc.voxel_size.y, mrc.voxel_size.z))
            ispg = int(mrc.header.ispg)
            mz = int(mrc.header.mz)
    except Exception as exc:  # mrcfile raises ValueError/OSError on corrupt files
        _fail(f"cannot read {path} as MRC (truncated or corrupt: {_first_line(exc)}); re-export the file")
    stack = ispg == 0 and data.ndim == 3
    # MRC2014 marks an image stack by space group 0 with mz = 1; IMOD's older tomograms use
    # space group 0 too, but with mz = nz
    return data, (vx if vx > 0 else None), {"mrc_is_stack": stack, "mrc_image_stack": stack and mz == 1,
                                            "pixel_sizes": {"x": vx, "y": vy, "z": vz}}


# Length units as files and napari name them, in Å (TIFF ImageJ metadata, RosettaSciIO axes,
# napari layer units): the one table every reader and writer converts with.
LENGTH_UNITS_TO_A = {"angstrom": 1.0, "a": 1.0, "\u00c5": 1.0, "\u00e5": 1.0, "\\u00c5": 1.0,
                     "nm": 10.0, "nanometer": 10.0, "pm": 0.01, "picometer": 0.01,
                     "micron": 1e4, "micrometer": 1e4, "um": 1e4, "\u00b5m": 1e4, "\u03bcm": 1e4,
                     "mm": 1e7, "m": 1e10}


def _check_tiff_size(tif, path: Path, what: str) -> None:
    """Refuse, from the page headers alone, a TIFF whose uncompressed data lies past its end or
    whose series (what ``asarray`` returns) does not fit in memory."""
    size = path.stat().st_size
    series = tif.series[0]
    ends = [series.dataoffset + series.nbytes] if series.dataoffset is not None else []
    for page in tif.pages:
        if getattr(page, "compression", None) == 1:  # uncompressed: every byte is in the file
            ends += [o + c for o, c in zip(page.dataoffsets, page.databytecounts)]
    if ends and max(ends) > size:
        _fail(f"cannot read {path} as TIFF (truncated or corrupt: its headers place uncompressed data up to byte {max(ends):,} "
              f"of a {size:,}-byte file); re-export the file")
    check_read_size(series.shape, np.dtype(series.dtype).itemsize, path, f"a {what}")


def _read_tiff(path: Path, what: str = "stack"):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            shapes = [tuple(pg.shape) for pg in tif.pages]
            odd = next((i for i, sh in enumerate(shapes) if sh != shapes[0]), None)
            if odd is not None:
                _fail(
                    f"{path}: projections of unequal size (page 0 is {'x'.join(map(str, shapes[0]))}, page {odd} is "
                    f"{'x'.join(map(str, shapes[odd]))}); crop or pad all projections to one size"
                )
            _check_tiff_size(tif, path, what)
            data = tif.asarray()
            px = None
            unit = str((tif.imagej_metadata or {}).get("unit", "")).lower()
            sizes = {"unit": "Å" if unit in LENGTH_UNITS_TO_A else "(the file's unit)"}
            for axis in ("x", "y"):  # the ratio tells square from stretched pixels in any unit
                tag = tif.pages[0].tags.get(f"{axis.upper()}Resolution")
                num, den = tag.value if tag is not None else (0, 0)
                if num > 0 and den > 0:
                    sizes[axis] = den / num * LENGTH_UNITS_TO_A.get(unit, 1.0)
            px = sizes.get("x") if unit in LENGTH_UNITS_TO_A else None
    except AETInputError:
        raise
    except Exception as exc:
        _fail(f"cannot read {path} as TIFF (truncated or corrupt: {_first_line(exc)}); re-export the file")
    return np.asarray(data), px, {"pixel_sizes": sizes}


def _npy_layout(path: Path):
    """Shape, dtype and data offset from an NPY file's header alone."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:
            shape, _, dtype = fmt._read_array_header(f, version)
        return shape, dtype, f.tell()


def _read_npy(path: Path, what: str = "array"):
    try:
        shape, dtype, offset = _npy_layout(path)
    except Exception as exc:
        _fail(f"cannot read {path} as NPY (not an NPY file, or a damaged header: {_first_line(exc)}); save a plain "
              "array with numpy.save")
    if not dtype.hasobject:
        need, have = offset + math.prod(shape) * dtype.itemsize, path.stat().st_size
        if need > have:
            _fail(f"cannot read {path} as NPY (truncated or corrupt: its header gives {shape} values of {dtype}, {need:,} bytes, "
                  f"but the file has {have:,}); save it again with numpy.save")
        check_read_size(shape, dtype.itemsize, path, f"a {what}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        _fail(f"cannot read {path} as NPY (truncated or corrupt, or pickled objects: {_first_line(exc)}); save a plain array with numpy.save")
    return np.asarray(data), None, {}


def _mat_variables(path: Path) -> dict:
    """Numeric variables of a MAT file from its headers alone (v4 and v5 through :mod:`._mat5`,
    v7.3/HDF5 through h5py; no data read): name -> (MATLAB shape, bytes per value, ...)."""
    import h5py

    if h5py.is_hdf5(path):
        check_hdf5_self_contained(path, "MAT v7.3 file")
        out = {}
        try:
            with h5py.File(path, "r") as f:

                def visit(name, obj):
                    if isinstance(obj, h5py.Dataset) and not name.startswith("#") and np.issubdtype(obj.dtype, np.number):
                        # HDF5 holds MATLAB's column-major array with its axes reversed.
                        out[name] = (tuple(reversed(obj.shape)), obj.dtype.itemsize)
                f.visititems(visit)
        except Exception as exc:
            _fail(f"cannot read {path} as MAT v7.3 (truncated or corrupt: {_first_line(exc)}); re-save it in MATLAB")
        return out
    import scipy.io

    from . import _mat5

    try:
        version = scipy.io.matlab.matfile_version(path)[0]
        # headers only, never a decoy's data (scipy's whosmat inflates compressed ones to skip them)
        return _mat5.variables(path) if version == 1 else _mat5.variables_v4(path)
    except Exception as exc:
        _fail(f"cannot read {path} as a MAT file (truncated or corrupt: {_first_line(exc)}); re-save it in MATLAB")


def _load_mat_variable(path: Path, variables: dict, name: str, what: str) -> np.ndarray:
    """One variable of a MAT file, after its header-given size is checked against memory; the
    others are never read."""
    import h5py

    shape, itemsize = variables[name][:2]
    check_read_size(shape, itemsize, path, f"the {what} variable {name!r}")
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return np.asarray(f[name][()]).T
        from . import _mat5

        return _mat5.load(path, name, variables[name])
    except Exception as exc:
        _fail(f"cannot read variable {name!r} of {path} (truncated or corrupt: {_first_line(exc)}); re-save it in MATLAB")


def _pick_mat_variable(path: Path, variables: dict, ndims: Sequence[int], names: Sequence[str], what: str, variable=None):
    """The array of the variable named, or of the one variable shaped like ``what`` (by name among several)."""
    if variable is not None:
        if variable not in variables:
            _fail(f"{path} has no numeric variable {variable!r}; it has: {', '.join(variables) or 'none'}")
        return _load_mat_variable(path, variables, variable, what)
    candidates = [k for k, (shape, *_) in variables.items()
                  if sum(d != 1 for d in shape) in ndims or len(shape) in ndims]
    for name in names:
        for k in candidates:
            if k.lower() == name:
                return _load_mat_variable(path, variables, k, what)
    if len(candidates) == 1:
        return _load_mat_variable(path, variables, candidates[0], what)
    if not candidates:
        _fail(f"{path} holds no {what}-shaped numeric variable; save the {what} as one array")
    _fail(f"{path} holds several possible {what} variables ({', '.join(candidates)}); name the one to use in the file (keep only that variable, or rename it 'tilts' / 'angles')")


def _read_mat_stack(path: Path, variable=None):
    variables = _mat_variables(path)
    data = _pick_mat_variable(
        path, variables, (3,), ("tilts", "tilt_series", "projections", "proj", "projs", "data"), "tilt series", variable
    )
    return np.asarray(data), None, {}


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


# ------------------------------------------------------------------------ angles


def find_angles_file(path: PathLike, include_generic: bool = True) -> Optional[Path]:
    """Angles file beside a tilt series: same stem with .rawtlt/.tlt/.txt/.csv, else ``angles.*``.

    Parameters
    ----------
    path : path
        The tilt series.
    include_generic : bool
        Also accept ``angles.*`` in the same folder.

    Returns
    -------
    Path or None
    """
    path = Path(path)
    for ext in (".rawtlt", ".tlt", ".txt", ".csv"):
        cand = path.with_suffix(ext)
        if cand.exists() and cand != path:
            return cand
    if include_generic:
        for ext in ANGLE_EXTENSIONS:
            cand = path.parent / f"angles{ext}"
            if cand.exists():
                return cand
    return None


# a plain real number as people write one: ASCII digits, one '.', an exponent; no '_' (Python's
# float() reads "1_0" as 10), no NaN/Inf, no other scripts' digits
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEADER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.()\-]*")
# headers of a three-column table that say it holds Euler angles
_EULER_HEADERS = {("phi", "theta", "psi"), ("rot", "tilt", "psi"), ("alpha", "beta", "gamma"),
                  ("euler1", "euler2", "euler3")}


def _parse_angle_text(path: Path, column=None) -> np.ndarray:
    """Rows of plain numbers (an optional header row of column names first), one or three a line;
    other widths only with ``column``."""
    rows, header = [], None
    try:
        text = read_side_file(path, "angles file").decode()
    except UnicodeDecodeError:
        _fail(f"angles file {path} is not text; give one angle (or phi theta psi) per line in degrees")
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p for p in re.split(r"[,\s;]+", line) if p]
        if not parts:
            continue
        if not all(_PLAIN_NUMBER.fullmatch(p) for p in parts):
            if header is None and not rows and all(_HEADER_NAME.fullmatch(p) and not _parses(p) for p in parts):
                header = [p.lower() for p in parts]
                continue
            _fail(f"angles file {path} line {lineno} ({line[:40]!r}) is not plain numbers; give degrees in digits "
                  "with a '.' (no '_', decimal comma, NaN or words), one or three per line")
        rows.append([float(p) for p in parts])
    if not rows:
        _fail(f"angles file {path} has no angles; give one angle (or phi theta psi) per line in degrees")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        _fail(f"angles file {path} mixes lines of {' and '.join(map(str, sorted(widths)))} values; use one form "
              "throughout")
    if header is not None and len(header) != len(rows[0]):
        _fail(f"angles file {path} names {len(header)} columns in its header but has {len(rows[0])} values a line; "
              "make them agree")
    return _pick_angle_columns(np.array(rows, dtype=np.float64), f"angles file {path}", header, column)


def _parses(text: str) -> bool:
    """Python would read it as a number (``nan``, ``inf``, ``1_0``): never a column name."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _looks_like_index(col: np.ndarray) -> bool:
    """0, 1, 2, ... or 1, 2, 3, ...: a row number, not an angle."""
    return len(col) >= 3 and col[0] in (0.0, 1.0) and bool(np.all(np.diff(col) == 1.0))


def _pick_angle_columns(arr: np.ndarray, source: str, header=None, column=None) -> np.ndarray:
    """One column (tilts) or three (Euler angles) of a table; ``column`` (a header name or a number
    from 1) picks the tilt angles out of any table, and a table that may not be angles needs it."""
    if arr.ndim < 2:
        arr = arr.reshape(-1, 1)
    n = arr.shape[1]
    names = f" ({', '.join(header)})" if header else ""
    if column is not None:
        key = str(column).strip().lower()
        if header and key in header:
            return arr[:, header.index(key)]
        if key.isdigit() and 1 <= int(key) <= n:
            return arr[:, int(key) - 1]
        _fail(f"{source} has no column {column!r}; it has {n}{names}: give --angle-column a header name or a "
              f"number from 1 to {n}")
    if n == 1:
        return arr[:, 0]
    if n == 3 and header is not None and tuple(header) not in _EULER_HEADERS:
        _fail(f"{source} has 3 columns{names}, not phi theta psi; name the tilt-angle column with --angle-column")
    if n == 3 and header is None and _looks_like_index(arr[:, 0]):
        _fail(f"{source} has 3 columns and the first counts {arr[0, 0]:g}, {arr[1, 0]:g}, {arr[2, 0]:g}... (an "
              "index, not Euler angles?); name the tilt-angle column with --angle-column (e.g. 2), or give phi theta psi")
    if n == 3:
        return arr
    _fail(f"{source} has {n} values a line{names}, neither one tilt angle nor phi theta psi (an index, a dose, "
          "decimal commas?); name the tilt-angle column with --angle-column (a header name or a number from 1)")


def _array_angles(arr, source, column=None) -> np.ndarray:
    """Angles from an array (NPY, MAT, given): real numbers; a table's columns picked as from text."""
    arr = _check_real(arr, source)
    if arr.ndim == 2 and 1 not in arr.shape:
        if arr.shape[1] != 3 and arr.shape[0] == 3 and column is None:
            arr = arr.T  # MATLAB users often store Euler angles as 3 x N
        return _pick_angle_columns(arr.astype(np.float64), f"angles from {source}", None, column)
    return arr


def _check_real(arr, source) -> np.ndarray:
    """Angles must be plain real numbers: no complex, text, boolean or object arrays."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        kind = {"c": "complex", "b": "boolean", "U": "text", "S": "text", "O": "object", "V": "structured"}
        _fail(f"angles from {source} are {kind.get(arr.dtype.kind, str(arr.dtype))} values ({arr.dtype}), not plain "
              "real numbers; save real angles in degrees")
    return arr


def _normalize_angles(arr: np.ndarray, source) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim == 2 and arr.shape[1] != 3 and arr.shape[0] == 3:
        arr = arr.T  # MATLAB users often store Euler angles as 3 x N
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 3)):
        _fail(f"angles from {source} have shape {arr.shape}; give N tilt angles or an N x 3 table of Euler angles")
    if arr.shape[0] == 0:
        _fail(f"angles from {source} are empty; give one angle per projection")
    if not np.all(np.isfinite(arr)):
        _fail(f"angles from {source} contain NaN/Inf; give finite angles in degrees")
    return arr


def check_angles_in_degrees(angles: np.ndarray, source="angles") -> None:
    """Reject angles that look like radians (all within ±π/2 for tilts, ±2π for Euler)."""
    a = np.asarray(angles, dtype=np.float64)
    if a.size < 3:
        return
    biggest = float(np.max(np.abs(a)))
    limit = np.pi / 2 + 0.05 if a.ndim == 1 else 2 * np.pi + 0.01
    if biggest <= limit and float(np.ptp(a)) > 0.2:
        _fail(
            f"angles from {source} look like radians (largest |angle| {biggest:.4g}); give degrees "
            f"(multiply by 57.2958) or state the unit as radians (--angle-units rad)"
        )


def read_angles(source, units: str = "deg", variable=None, column=None) -> np.ndarray:
    """Read tilt angles (N,) or Z-Y-Z Euler angles (N, 3) in degrees.

    ``source`` is a file (``.txt``/``.csv``/``.rawtlt``/``.tlt``: one value or three per line,
    plain numbers, optionally under a header row of column names; ``.npy``; ``.mat``) or an
    array of real numbers. ``units`` is ``'deg'`` (checked against radians) or ``'rad'``. A
    table of 2 or more than 3 columns, a 3-column one whose header is not ``phi theta psi``
    or whose first column counts 0, 1, 2, ... is read only with ``column``.

    Parameters
    ----------
    source : path or array
    units : {"deg", "rad"}
    variable : str, optional
        Variable name in a ``.mat`` file.
    column : str or int, optional
        The tilt-angle column of a table: a header name or a number from 1.

    Returns
    -------
    (N,) or (N, 3) array
        Degrees.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        _check_readable(path, "angles", SIDE_FILE_MAX_BYTES)
        ext = path.suffix.lower()
        label = str(path)
        if ext in ANGLE_TEXT_EXTENSIONS or ext == "":
            arr = _parse_angle_text(path, column)
        elif ext == ".npy":
            arr = _array_angles(_read_npy(path)[0], label, column)
        elif ext == ".mat":
            arr = _array_angles(_pick_mat_variable(
                path, _mat_variables(path), (1, 2), ("angles", "tilt_angles", "tiltangles", "angle", "eulerangles"), "angles", variable
            ), label, column)
        else:
            _fail(f"{path}: unknown angles file type {ext}; use {', '.join(ANGLE_EXTENSIONS)}")
    else:
        label = "the given array"
        arr = _array_angles(source, label, column)
    arr = _normalize_angles(arr, label)
    if units == "rad":
        return np.rad2deg(arr)
    if units != "deg":
        _fail(f"angle units {units!r} unknown; use 'deg' or 'rad'")
    check_angles_in_degrees(arr, label)
    return arr


def write_angles(path: PathLike, angles) -> None:
    """Write angles in degrees, one (or phi theta psi) per line, atomically.

    Parameters
    ----------
    path : path
    angles : (N,) or (N, 3) array
        Degrees.
    """
    a = np.asarray(angles, dtype=np.float64)
    with atomic_path(path) as tmp:
        np.savetxt(tmp, a.reshape(a.shape[0], -1), fmt="%.6f")


# ------------------------------------------------------------------- tilt series


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
    from .geometry import ANGLE_CONVENTIONS, convert_angles

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


# ------------------------------------------------------------------------ volumes


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


# -------------------------------------------------------------------------- atoms


def empty_atoms_table(n: int = 0):
    """An atoms table (pandas DataFrame) with the contract's columns.

    Parameters
    ----------
    n : int
        Rows.

    Returns
    -------
    DataFrame
    """
    import pandas as pd

    return _coerce_atoms(pd.DataFrame({c: [] for c in ("x", "y", "z")}).reindex(range(n)))


def _coerce_atoms(df):
    """Order the contract's columns first and give each its type."""
    import pandas as pd

    df = df.copy()
    df.columns = [str(c).strip() for c in df.columns]
    lower = {c: c.lower() for c in df.columns if c.lower() in ATOM_COLUMNS}
    df = df.rename(columns=lower)
    for c in ("x", "y", "z"):
        if c not in df.columns:
            _fail("atoms table lacks columns x, y, z (Å); the contract's CSV starts with x,y,z")
    for c in df.columns:
        if c in _STR_COLUMNS:
            df[c] = df[c].astype(object).where(df[c].notna(), "").map(_facet_str if c == "facet" else str)
            df[c] = df[c].astype(str)
        elif c in _INT_COLUMNS or c == "layer":
            col = _whole_numbers(df[c], c)
            df[c] = col.astype("int64") if c != "layer" and not col.isna().any() else col.astype("Int64")
        elif c in ATOM_COLUMNS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    ordered = [c for c in ATOM_COLUMNS if c in df.columns] + [c for c in df.columns if c not in ATOM_COLUMNS]
    df = df[ordered].reset_index(drop=True)
    if not np.all(np.isfinite(df[["x", "y", "z"]].to_numpy(dtype=float))):
        _fail("atoms table has NaN/Inf in x, y, z; every atom needs a finite position in Å")
    return df


def _whole_numbers(values, column: str):
    """A column of whole numbers (or blanks) as floats; 1.5 or 'x' refused, never truncated."""
    import pandas as pd

    col = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = col.notna() & ((col % 1 != 0) | ~np.isfinite(col))
    raw = pd.Series(values)
    blank = raw.isna() | raw.astype(object).map(lambda v: str(v).strip() in ("", "nan", "NaN", "<NA>", "None"))
    bad |= col.isna() & ~blank
    if bad.any():
        first = pd.Series(values)[bad].iloc[0]
        _fail(f"atoms table column '{column}' holds {str(first)[:20]!r}, not a whole number; {column} is an index "
              "(0, 1, 2, ...) or blank")
    return col


def _facet_str(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def read_sidecar(side: PathLike, kind: Optional[str] = None) -> dict:
    """The JSON object in a sidecar file; one-line errors for invalid JSON, a non-object or,
    with ``kind``, a field of the wrong type (:mod:`napari_aet.core.schemas`).

    Parameters
    ----------
    side : path
        ``.json``.
    kind : str, optional
        The file's schema: ``volume``, ``atoms``, ``report``, ``weights`` or ``progress``.

    Returns
    -------
    dict
    """
    side = Path(side)
    note_input(side)
    try:
        info = json.loads(read_side_file(side, "sidecar").decode())
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read sidecar {side} ({_first_line(exc)}); fix or remove it")
    except json.JSONDecodeError as exc:
        _fail(f"sidecar {side} is not valid JSON ({exc.msg}, line {exc.lineno}); fix or remove it")
    if not isinstance(info, dict):
        _fail(f"sidecar {side} holds a JSON {type(info).__name__}, not an object; fix or remove it")
    if kind is not None:
        from .schemas import check

        check(info, kind, str(side))
    return info


def sidecar_owner(side: PathLike) -> Optional[str]:
    """The data file a sidecar JSON belongs to (its ``data_file``), None when it does not say.

    Parameters
    ----------
    side : path

    Returns
    -------
    str or None
    """
    try:
        info = json.loads(read_side_file(side, "sidecar").decode())
    except (AETInputError, OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    owner = info.get("data_file") if isinstance(info, dict) else None
    return owner if isinstance(owner, str) else None


def atoms_metadata_path(path: PathLike) -> Path:
    """The JSON sidecar of an atoms table (crystal rotation, lattice, settings).

    Parameters
    ----------
    path : path
        The atoms table.

    Returns
    -------
    Path
        ``<stem>.json`` beside it.
    """
    return Path(path).with_suffix(".json")


def _ase_format(path: Path) -> Optional[str]:
    name = path.name.upper()
    if name.startswith("POSCAR") or name.startswith("CONTCAR"):
        return "vasp"
    return ASE_FORMATS.get(path.suffix.lower())


# A spreadsheet runs a cell that starts with one of these as a formula (OWASP's CSV injection):
# text cells and column names so started are written behind a quote, and read back without it.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _spreadsheet_safe(text):
    if isinstance(text, str) and text[:1] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(text.strip()):
        return "'" + text
    return text


def _spreadsheet_plain(text):
    if isinstance(text, str) and text[:1] == "'" and text[1:2] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(text[1:].strip()):
        return text[1:]
    return text


def _csv_safe_table(df):
    """``df`` with every text cell and column name made safe to open in a spreadsheet."""
    import pandas as pd

    df = df.rename(columns=lambda c: _spreadsheet_safe(str(c)))
    for c in df.columns:
        if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype):
            df[c] = df[c].map(_spreadsheet_safe)
    return df


def write_atoms(path: PathLike, table, metadata: Optional[dict] = None) -> None:
    """Write an atoms table, atomically.

    Parameters
    ----------
    path : path
        ``.csv`` (lossless, with a JSON sidecar holding ``metadata``), or ``.xyz``,
        ``.extxyz``, ``.pdb``, ``.xsf``, ``.lmp``, ``.cif``, ``POSCAR`` through ASE.
    table : DataFrame
        Contract columns (``x, y, z`` in Å first).
    metadata : dict, optional
        Lattice, settings, provenance; written beside a CSV.
    """
    path = Path(path)
    df = _coerce_atoms(table)
    if path.suffix.lower() == ".csv":
        with atomic_path(path) as tmp:
            _csv_safe_table(df).to_csv(tmp, index=False)
        if metadata is not None:  # the sidecar names its table, so no other file's sidecar is taken for it
            write_json(atoms_metadata_path(path), {**metadata, "data_file": path.name})
        return
    fmt = _ase_format(path)
    if fmt is None:
        _fail(f"{path}: unknown atoms file type; use .csv (lossless), .xyz, .extxyz, .cif, POSCAR, .pdb, .xsf or .lmp")
    import ase
    import ase.io

    atoms = _to_ase(df, metadata, fmt)
    kwargs = {}
    if fmt == "lammps-data":
        kwargs = {"masses": True, "specorder": sorted(set(atoms.get_chemical_symbols()))}
    elif fmt in POSITIONS_ONLY_FORMATS:
        atoms = ase.Atoms(symbols=atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, atoms, format=fmt, **kwargs)


# Periodic formats (CIF, POSCAR) wrap coordinates into their cell: there the sample-frame
# origin is put at the cell's centre, and reading such a file subtracts the centre again.
_CELL_CENTRED = ("cif", "vasp")


def _to_ase(df, metadata: Optional[dict], fmt: str):
    import ase
    from ase.data import chemical_symbols

    symbols = [s if s in chemical_symbols else "X" for s in df.get("species", [""] * len(df))]
    pos = df[["x", "y", "z"]].to_numpy(dtype=float)
    half = float(np.abs(pos).max()) + 5.0 if len(pos) else 5.0
    cell = np.eye(3) * 2 * half
    if fmt in _CELL_CENTRED:
        atoms = ase.Atoms(symbols=symbols, positions=pos + half, cell=cell, pbc=True)
    else:
        atoms = ase.Atoms(symbols=symbols, positions=pos, cell=cell, pbc=False)
    for c in df.columns:
        if c in ("x", "y", "z", "species"):
            continue
        if c == "facet":
            atoms.new_array("facet", np.array([s or "-" for s in df[c]], dtype="U8"))
            continue
        col = df[c].to_numpy(dtype=float, na_value=np.nan)
        atoms.new_array(c, col)
    if metadata:
        atoms.info["napari_aet"] = json.dumps(metadata, default=_json_default)
    return atoms


def read_atoms(path: PathLike):
    """Read an atoms table and its metadata.

    Parameters
    ----------
    path : path
        CSV (every column restored exactly, metadata from its JSON sidecar) or
        XYZ/extXYZ/CIF/POSCAR through ASE.

    Returns
    -------
    table : DataFrame
    metadata : dict
    """
    import pandas as pd

    path = Path(path)
    _check_readable(path, "atoms")
    meta: dict = {}
    if path.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={c: str for c in _STR_COLUMNS})
        except Exception as exc:
            _fail(f"cannot read {path} as an atoms CSV ({_first_line(exc)}); give columns x,y,z,... per the contract")
        df = df.rename(columns=_spreadsheet_plain)
        for c in df.columns:
            if df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype):
                df[c] = df[c].map(_spreadsheet_plain)
        side = atoms_metadata_path(path)
        if side.exists():
            meta = read_sidecar(side, "atoms")
        return _coerce_atoms(df), meta
    fmt = _ase_format(path)
    if fmt is None:
        _fail(f"{path}: unknown atoms file type; use .csv (lossless), .xyz, .extxyz, .cif, POSCAR, .pdb, .xsf or .lmp")
    import ase.io

    try:
        atoms = ase.io.read(path, format=fmt, **({"atom_style": "atomic"} if fmt == "lammps-data" else {}))
    except Exception as exc:
        _fail(f"cannot read {path} as {fmt} ({_first_line(exc)}); re-export it")
    pos = atoms.positions.copy()
    if fmt in _CELL_CENTRED and atoms.cell.rank == 3:
        pos -= atoms.cell.array.sum(0) / 2
    cols = {"x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2]}
    for name, arr in atoms.arrays.items():
        if name in ("positions", "numbers"):
            continue
        if name == "facet":
            cols["facet"] = ["" if s == "-" else str(s) for s in arr]
        elif np.asarray(arr).ndim == 1:
            cols[name] = arr
    syms = atoms.get_chemical_symbols()
    cols["species"] = ["" if s == "X" else s for s in syms]
    if "napari_aet" in atoms.info:
        try:
            meta = json.loads(atoms.info["napari_aet"])
        except (TypeError, json.JSONDecodeError):
            meta = {}
    return _coerce_atoms(pd.DataFrame(cols)), meta
