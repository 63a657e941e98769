"""The step widgets, one module each (load, align, reconstruct, enhance, trace, analyze;
correction and figures beside them), gathered here for napari's manifest and for scripts."""

from .align import AlignWidget
from .analyze import AnalyzeWidget
from .base import WorkerWidget, aet_meta, layer_table, recolour
from .enhance import EnhanceWidget
from .load import STACK_LAYOUTS, LoadWidget
from .reconstruct import ReconstructWidget
from .trace import TraceWidget

__all__ = ["LoadWidget", "AlignWidget", "ReconstructWidget", "EnhanceWidget", "TraceWidget", "AnalyzeWidget",
           "WorkerWidget", "aet_meta", "layer_table", "recolour", "STACK_LAYOUTS"]
