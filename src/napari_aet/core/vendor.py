"""Microscope files and the tilt metadata that travels with them.

* Velox EMD, EMD 1.0 (HDF5) and DigitalMicrograph DM3/DM4 stacks through RosettaSciIO, with
  the pixel size converted to Å from the file's own units and the stage alpha tilt of every
  frame (Velox stores one metadata record per frame).
* Tilt angles from an MRC extended header (FEI1/FEI2, through mrcfile's indexed extended
  header), from SerialEM's ``.mdoc`` beside the stack (``name.mdoc`` or ``name.mrc.mdoc``,
  through the ``mdocfile`` package) and, by the caller, from ``.rawtlt``/``.tlt`` files.

Every function returns where its angles came from, so outputs can name their source.

The readers live in :mod:`napari_aet.core.io.vendor` with the other formats; this module keeps
the names callers import."""

from .io.vendor import (  # noqa: F401
    _VELOX_METADATA_MAX_BYTES,
    VENDOR_EXTENSIONS,
    __all__,
    _rsciio_reader,
    _velox_frame_tilts,
    find_mdoc,
    mdoc_tilts,
    mrc_header_tilts,
    read_vendor_stack,
)

__reexport__ = True  # scripts/api_docs.py lists these functions under this module's name
