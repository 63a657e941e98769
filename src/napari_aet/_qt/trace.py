"""Trace atoms: sub-voxel positions in a tomogram, atoms told from noise (and, given the
species, from each other by their intensity), refined against the tilt series the tomogram came
from (as ``run`` does)."""

from __future__ import annotations

import numpy as np

from magicgui import widgets as mg

from .base import WorkerWidget, aet_meta, number, recolour

NO_REFINEMENT = "none (trace only)"


def _trace_task(volume, pixel_size, tilts, min_distance, device, free_projections=(), species=(), probe_tail=True,
                progress=None, cancel=None):
    from ..core.io import TiltSeries, Volume
    from ..core.pipeline import trace_volume

    ts = None if tilts is None else TiltSeries(*tilts)
    free = None
    if ts is not None and free_projections and max(free_projections) < len(ts.data):
        free = np.zeros(len(ts.data), bool)
        free[list(free_projections)] = True
    classes = {"species": tuple(species), "n_classes": len(species) + 1} if species else {}  # none: one species
    return trace_volume(Volume(volume, pixel_size), ts, min_distance=min_distance, refine=ts is not None,
                        device=device, progress_factory=lambda name: progress, cancel=cancel, free=free,
                        probe_tail=probe_tail, **classes)


class TraceWidget(WorkerWidget):
    """Trace atoms in a tomogram layer and refine them against its (aligned) tilt series, the
    same call ``run`` makes; atoms become a Points layer with their features."""

    run_label = "Trace atoms"
    layer_kinds = ("tomogram", "ideal_tomogram")

    def build_form(self, form):
        self.layer_box.label = "tomogram"
        self.min_distance = number("min. distance", 0.5, 10.0, 2.0, decimals=2, suffix=" Å")
        self.species = mg.LineEdit(label="species", value="",
                                   tooltip="the atoms' species, lightest (faintest) first, e.g. Ni Pt: one intensity "
                                           "class each; empty: one species")
        self.species.native.setPlaceholderText("one species (or e.g. Ni Pt, lightest first)")
        # the newest tilt series first (the aligned one, as run refines), trace-only last
        self.refine_against = self.layer_choice("refine against", ("tilt_series",), after=(NO_REFINEMENT,),
                                                tooltip="the aligned tilt series this tomogram was reconstructed from")
        self.probe_tail = mg.CheckBox(label="fit the probe tail", value=True,
                                      tooltip="fit the probe's tail with the atoms and, when it holds 5% or more of "
                                              "the intensity, take it off the tilt series for the refit and confidence "
                                              "(as run; off: Gaussian atoms alone, run --no-probe-tail)")
        form.extend([self.layer_box, self.min_distance, self.species, self.refine_against, self.probe_tail])
        self.settings.update(min_distance=self.min_distance, species=self.species, probe_tail=self.probe_tail)

    def start(self):
        from ..core.batch import species_names

        species = species_names(self.species.value, "species")  # a bad entry: one line, before any work
        layer = self.selected_layer()
        px = aet_meta(layer).get("pixel_size")
        if layer is None or not px:
            self.status.setText("no tomogram layer with a voxel size: reconstruct or open one first")
            return
        tilts = None
        name = self.refine_against.value
        if name and name != NO_REFINEMENT and name in self.viewer.layers:
            ts_layer = self.viewer.layers[name]
            meta = aet_meta(ts_layer)
            if not meta.get("angles"):
                raise ValueError(f"{name} has no tilt angles: load it with its angles, or trace without refinement")
            tilts = (np.asarray(ts_layer.data, np.float32), np.asarray(meta["angles"], float),
                     float(meta.get("pixel_size") or px))
        self.status.setText("tracing..." + (" and refining" if tilts else ""))
        self._source, self._species = layer.name, species
        self.launch(_trace_task, np.asarray(layer.data), float(px), tilts, self.min_distance.value,
                    self.device.value, tuple(aet_meta(layer).get("free_projections") or ()), species,
                    self.probe_tail.value)

    def on_result(self, result):
        from .._layers import atoms_layer

        table, meta = result
        atoms = table[table["atom"] == 1].reset_index(drop=True)
        data, kwargs, kind = atoms_layer(atoms, name="traced atoms", metadata=meta)
        kwargs["metadata"]["napari_aet"]["tomogram"] = self._source
        self.add_layer((data, kwargs, kind))
        counts = _species_counts(atoms, getattr(self, "_species", ()))
        if len(counts) >= 2:  # an alloy: each species in its fixed colour (the figures' and Analyze's)
            recolour(self.viewer.layers["traced atoms"], "species")
        refined = meta.get("refinement")
        extra = (f"; refined against the tilt series (R {refined['r_factor_before']:.4f} -> "
                 f"{refined['r_factor_after']:.4f})" if refined else "")
        tail = (refined or {}).get("probe_tail")
        if tail and tail.get("removed"):
            extra += (f"; probe tail {tail['fraction']:.0%} in {tail['sigma_A']:.2f} Å fitted and taken off "
                      f"(R {tail['r_factor_after']:.4f})")
        valid = meta.get("validation")
        if valid:
            free = (f", R-free {valid['r_free']:.4f}" if valid.get("r_free") is not None
                    else "; no R-free (the tomogram saw every projection: run holds some out)")
            extra += (f"; R-work {valid['r_work']:.4f}{free}; {valid['n_atoms_presence_below_half']} atoms with "
                      "presence < 0.5 (colour by presence, or Correct atoms: next least certain)")
        mix = f" ({', '.join(f'{n} {c}' for n, c in counts.items())})" if len(counts) >= 2 else ""
        self.status.setText(f"{len(atoms)} atoms{mix}, {len(table) - len(atoms)} non-atom peaks{extra}")


def _species_counts(atoms, order=()) -> dict:
    """Atoms per named species, in the order given (lightest first), others after."""
    if "species" not in atoms:
        return {}
    labels = atoms["species"].fillna("").astype(str).str.strip()
    counts = labels[labels != ""].value_counts()
    names = [n for n in order if n in counts.index] + sorted(n for n in counts.index if n not in order)
    return {name: int(counts[name]) for name in names}
