"""Atoms tables per the contract: CSV (lossless, with its JSON sidecar, safe to open in a spreadsheet) and the structure formats ASE writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from .angles import _PLAIN_NUMBER
from .files import (
    _check_readable,
    _fail,
    _first_line,
    _json_default,
    atomic_path,
    atoms_metadata_path,
    read_sidecar,
    write_json,
)
from .records import PathLike

ATOM_COLUMNS = [
    "x", "y", "z", "intensity", "atom", "species", "fcc", "surface", "facet", "layer",
    "ux", "uy", "uz", "exx", "eyy", "ezz", "exy", "exz", "eyz",
]
_INT_COLUMNS = ("atom", "fcc", "surface")
_STR_COLUMNS = ("species", "facet")
ASE_FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".cif": "cif", ".vasp": "vasp", ".poscar": "vasp",
               ".pdb": "proteindatabank", ".xsf": "xsf", ".lmp": "lammps-data"}


# formats that keep only species and positions (no per-atom columns); PDB rounds to 1 pm
POSITIONS_ONLY_FORMATS = ("proteindatabank", "xsf", "lammps-data")
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
    xyz = df[["x", "y", "z"]].to_numpy(dtype=float)
    if not np.all(np.isfinite(xyz)):
        _fail("atoms table has NaN/Inf in x, y, z; every atom needs a finite position in Å")
    if len(xyz) and np.abs(xyz).max() > 1e5:  # 10 µm: no tomogram is that large (nm or pm given?)
        _fail(f"atoms table has a position of {np.abs(xyz).max():.3g} Å; positions are in Å within the sample")
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
            bad = df[c].map(lambda v: isinstance(v, str) and any(ord(ch) < 32 and ch != "\t" for ch in v))
            if bad.any():
                _fail(f"atoms table column '{c}' holds a line break or control character ({df[c][bad].iloc[0][:20]!r}); "
                      "give plain text (species as element symbols)")
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
