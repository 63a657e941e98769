"""TIFF stacks: shape, dtype and resolution from the pages before the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import AETInputError
from ..guards import check_read_size
from .files import _fail, _first_line
from .pixels import LENGTH_UNITS_TO_A


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
