"""napari-aet: atomic electron tomography of nanoparticles, from tilt series to strain.

Importing the package is light: no torch, Qt or napari until a stage needs them.
"""

try:
    from ._version import version as __version__
except ImportError:  # running from a source tree without an install
    __version__ = "0.1.0"

__all__ = ["__version__"]
