"""Schemas of the JSON files napari-aet reads back (tomogram and atoms sidecars, run reports,
weights' provenance, a run's progress), checked on read so a damaged or hand-edited file
gives one line naming the file and the field instead of a traceback deep in a stage.

pydantic (v2) checks them: it is already in every install (napari and npe2 are built on it),
its errors carry the field's path, and the models are the files' documentation. Fields the
code does not read are allowed and kept (files from newer versions still open); the fields it
reads must have the right type.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from .errors import AETInputError


class _Open(BaseModel):
    """A JSON object: the named fields are checked, others kept as they are. Strict: a number
    is a JSON number (not "1_0", not true), a text is a JSON string."""

    model_config = ConfigDict(extra="allow", strict=True)


def _flat(values) -> list:
    return values if not values or not isinstance(values[0], list) else [v for row in values for v in row]


def _within(values, bound: float, what: str):
    """Finite and within ±bound (plausible), else a ValueError naming what is wrong."""
    flat = _flat(values) if isinstance(values, list) else [values]
    if not all(math.isfinite(v) for v in flat):
        raise ValueError(f"holds NaN or infinity; give finite {what}")
    if any(abs(v) > bound for v in flat):
        raise ValueError(f"holds a value beyond ±{bound:g}; give {what}")
    return values


def _finite(values):
    return _within(values, 360.0, "angles in degrees (within ±360°)")


class _AngleList(_Open):
    angles_deg: Optional[Union[List[float], List[List[float]]]] = None

    @field_validator("angles_deg")
    @classmethod
    def _angles(cls, v):
        if v is None:
            return v
        if v and isinstance(v[0], list) and any(len(row) != 3 for row in v):
            raise ValueError("rows must be 3 Euler angles (Z-Y-Z) each, or give one tilt angle per projection")
        return _finite(v)


class TiltAxis(_Open):
    tilt_axis_angle_deg: float

    @field_validator("tilt_axis_angle_deg")
    @classmethod
    def _angle(cls, v):
        return _within(v, 180.0, "an in-plane angle in degrees (within ±180°)")


class _Named(_Open):
    model: Optional[str] = None
    method: Optional[str] = None


class Preprocessing(_Open):
    tilt_axis: Optional[TiltAxis] = None
    background: Optional[_Named] = None
    denoise: Optional[_Named] = None


class TiltsRead(_Open):
    stack_axis: Optional[int] = None
    transpose_projections: Optional[bool] = None
    angle_units: Optional[str] = None
    angle_convention: Optional[str] = None
    tilt_axis_angle: Optional[float] = None
    angle_column: Optional[Union[int, str]] = None

    @field_validator("tilt_axis_angle")
    @classmethod
    def _angle(cls, v):
        return v if v is None else _within(v, 180.0, "an in-plane angle in degrees (within ±180°)")


MAX_SHIFT_PX = 10_000  # no detector is wider: a larger shift is damage, not alignment


class Alignment(_AngleList):
    shifts_px: Optional[List[List[float]]] = None
    tilt_axis_offset_px: Optional[float] = None
    history: Optional[List[Any]] = None

    @field_validator("shifts_px", "tilt_axis_offset_px")
    @classmethod
    def _pixels(cls, v):
        if isinstance(v, list) and any(len(row) != 2 for row in v):
            raise ValueError("rows must be 2 shifts (v, u) in pixels each")
        return v if v is None else _within(v, MAX_SHIFT_PX, f"pixel shifts (within ±{MAX_SHIFT_PX})")


class VolumeSidecar(_AngleList):
    """``VOL.json`` beside a tomogram (``reconstruct``, ``run``)."""

    tilts: Optional[str] = None
    tilts_read: Optional[TiltsRead] = None
    preprocessing: Optional[Preprocessing] = None
    alignment: Optional[Alignment] = None
    pixel_size: Optional[float] = None


class Lattice(_Open):
    lattice_constant: float
    crystal_rotation: List[List[float]]

    @field_validator("crystal_rotation")
    @classmethod
    def _rotation(cls, v):
        if len(v) != 3 or any(len(row) != 3 for row in v):
            raise ValueError("must be a 3x3 matrix")
        import numpy as np

        m = np.asarray(_within(v, 1.0 + 1e-6, "a rotation matrix"), float)
        if not np.allclose(m @ m.T, np.eye(3), atol=1e-3):
            raise ValueError("is not a rotation (its rows are not orthonormal)")
        return v

    @field_validator("lattice_constant")
    @classmethod
    def _constant(cls, v):
        if not (math.isfinite(v) and 1.0 <= v <= 10.0):
            raise ValueError("must be a lattice constant in Å (1-10)")
        return v


class AnalysisSettings(_Open):
    layer_axis: Optional[str] = None
    support_normal: Optional[List[float]] = None

    @field_validator("layer_axis")
    @classmethod
    def _axis(cls, v):
        from .analysis import LAYER_AXES

        if v is not None and v not in LAYER_AXES:
            raise ValueError(f"must be one of {', '.join(LAYER_AXES)}")
        return v

    @field_validator("support_normal")
    @classmethod
    def _normal(cls, v):
        if v is not None and (len(v) != 3 or not all(math.isfinite(c) for c in v) or not any(v)):
            raise ValueError("must be 3 finite numbers, not all zero (a direction)")
        return v


class Analysis(_Open):
    lattice: Optional[Lattice] = None
    settings: Optional[AnalysisSettings] = None
    share_assigned: Optional[float] = None
    facet_statistics: Optional[Dict[str, Any]] = None


class Refinement(_Open):
    r_factor_before: Optional[float] = None
    r_factor_after: Optional[float] = None


class AtomsSidecar(_Open):
    """``ATOMS.json`` beside an atoms table (``trace``, ``analyze``, ``run``)."""

    analysis: Optional[Analysis] = None
    refinement: Optional[Refinement] = None
    data_file: Optional[str] = None


class RunReport(_Open):
    """``report.json`` of ``run`` (read back by ``figures`` and ``batch``)."""

    alignment: Optional[_AngleList] = None
    settings: Optional[_AngleList] = None
    enhancement: Optional[Dict[str, Any]] = None
    n_atoms: Optional[int] = None
    share_assigned_fcc: Optional[float] = None
    lattice_constant: Optional[float] = None
    r_work: Optional[float] = None
    r_free: Optional[float] = None


class WeightsSidecar(_Open):
    """``weights.json`` beside network weights: their checksum and provenance."""

    sha256: Optional[str] = None

    @field_validator("sha256")
    @classmethod
    def _hex(cls, v):
        if v is not None and (len(v) != 64 or any(c not in "0123456789abcdef" for c in v.lower())):
            raise ValueError("is not a SHA-256 checksum (64 hexadecimal digits)")
        return v


class RunProgress(_Open):
    """``progress.json`` of an unfinished run (``--resume``)."""

    fingerprint: str
    stages: Dict[str, Dict[str, Any]]


SCHEMAS = {"volume": VolumeSidecar, "atoms": AtomsSidecar, "report": RunReport, "weights": WeightsSidecar,
           "progress": RunProgress}


def check(info: dict, kind: str, source: str) -> dict:
    """Check a JSON object read from ``source`` against the schema ``kind``.

    Parameters
    ----------
    info : dict
        The parsed JSON object.
    kind : str
        One of ``volume``, ``atoms``, ``report``, ``weights``, ``progress``.
    source : str
        The file, for the message.

    Returns
    -------
    dict
        ``info`` itself (unchanged) when it fits.

    Raises
    ------
    AETInputError
        One line naming the file, the field and what is wrong.
    """
    try:
        SCHEMAS[kind].model_validate(info)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        got = repr(err.get("input"))[:40]
        raise AETInputError(f"{source}: field '{field}' {msg} (found {got}); fix the file or write it again "
                            "with napari-aet") from None
    return info
