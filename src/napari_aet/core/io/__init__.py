"""Reading and writing tilt series, angles, volumes and atoms tables per the contract.

Every reader checks what it reads and raises :class:`~napari_aet.core.errors.AETInputError`
with one line naming the problem and the fix; every writer writes to a temporary file in the
destination folder and renames it into place, so a failed write never leaves a half file
where the user's data was.

The package holds one module per concern, each importing only those before it (no cycle):
``records`` (TiltSeries, Volume, file types), ``files`` (errors, atomic writes, JSON, sidecars),
``pixels``, the readers by format (``mrc``, ``tiff``, ``npy``, ``mat``, ``vendor``), ``angles``,
``tiltseries`` (tilt series and tomograms) and ``atoms`` (atoms tables). Every name is
importable from here, as it was from the single module."""

from __future__ import annotations

from . import vendor  # noqa: F401,E402
from .angles import (  # noqa: F401
    _EULER_HEADERS,
    _HEADER_NAME,
    _PLAIN_NUMBER,
    _array_angles,
    _check_real,
    _looks_like_index,
    _normalize_angles,
    _parse_angle_text,
    _parses,
    _pick_angle_columns,
    check_angles_in_degrees,
    find_angles_file,
    read_angles,
    write_angles,
)
from .atoms import (  # noqa: F401
    _CELL_CENTRED,
    _FORMULA_START,
    _INT_COLUMNS,
    _STR_COLUMNS,
    ASE_FORMATS,
    ATOM_COLUMNS,
    POSITIONS_ONLY_FORMATS,
    _ase_format,
    _coerce_atoms,
    _csv_safe_table,
    _facet_str,
    _spreadsheet_plain,
    _spreadsheet_safe,
    _to_ase,
    _whole_numbers,
    empty_atoms_table,
    read_atoms,
    write_atoms,
)
from .files import (  # noqa: F401
    _UMASK_LOCK,
    _check_readable,
    _fail,
    _first_line,
    _json_default,
    _strict,
    _umask,
    atomic_path,
    atoms_metadata_path,
    read_sidecar,
    sidecar_owner,
    write_json,
)
from .mat import (  # noqa: F401
    _load_mat_variable,
    _mat_variables,
    _pick_mat_variable,
    _read_mat_stack,
)
from .mrc import (  # noqa: F401
    _check_mrc_size,
    _mrc_layout,
    _read_mrc,
)
from .npy import (  # noqa: F401
    _npy_layout,
    _read_npy,
)
from .pixels import (  # noqa: F401
    LENGTH_UNITS_TO_A,
    _check_square_pixels,
    _check_values,
    _resolve_pixel_size,
    check_pixel_size,
)
from .records import (  # noqa: F401
    ANGLE_EXTENSIONS,
    ANGLE_TEXT_EXTENSIONS,
    MRC_EXTENSIONS,
    PIXEL_SIZE_RANGE,
    TIFF_EXTENSIONS,
    TILT_EXTENSIONS,
    VENDOR_EXTENSIONS,
    PathLike,
    TiltSeries,
    Volume,
)
from .tiff import (  # noqa: F401
    _check_tiff_size,
    _read_tiff,
)
from .tiltseries import (  # noqa: F401
    _angles_from_metadata,
    _read_array,
    looks_like_tilt_series,
    read_tilt_series,
    read_volume,
    stack_shape,
    write_tilt_series,
    write_volume,
)

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
