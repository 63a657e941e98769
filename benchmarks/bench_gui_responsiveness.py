"""Does the napari GUI stay responsive while the heavy steps run? (issue 8)

Run:  xvfb-run -a python benchmarks/bench_gui_responsiveness.py

Opens the built-in sample (144³, 21 projections) in a shown napari viewer and runs the
Reconstruct (RESIRE, 100 iterations, with the Fourier view), Enhance (U-Net, with the Fourier
views) and Trace widgets one after the other. A 10 ms Qt timer records when the event loop
runs; the longest gap between its ticks during each step is how long the GUI froze.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

os.environ.setdefault("NAPARI_AET_HOME", tempfile.mkdtemp())  # leave the user's settings alone


def main():
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_aet._qt.widgets import EnhanceWidget, ReconstructWidget, TraceWidget

    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-aet", "pt_nanoparticle")
    app = QApplication.instance()
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(10)
    results = {}

    def run(widget, done, label):
        viewer.window.add_dock_widget(widget)
        widget.device.setCurrentText("cpu")
        ticks.clear()
        t0 = time.perf_counter()
        widget.run_button.click()
        while not done():
            app.processEvents()
            time.sleep(0.002)
        for _ in range(20):  # let layer creation run
            app.processEvents()
        t1 = time.perf_counter()
        gaps = [b - a for a, b in zip(ticks, ticks[1:])]
        worst = sorted(range(len(gaps)), key=lambda i: -gaps[i])[:3]
        results[label] = {"seconds": t1 - t0, "ticks": len(ticks), "longest_gap_ms": 1000 * max(gaps),
                          "worst_gaps_ms_at_s": [(round(1000 * gaps[i]), round(ticks[i] - t0, 2)) for i in worst],
                          "gaps_over_100ms": sum(g > 0.1 for g in gaps), "status": widget.status.text()}
        print(label, json.dumps(results[label]), flush=True)

    rec = ReconstructWidget(viewer)
    rec.show_fourier.setChecked(True)
    run(rec, lambda: "tomogram (resire)" in viewer.layers and rec.run_button.isEnabled(), "reconstruct")
    enh = EnhanceWidget(viewer)
    enh.layer_box.setCurrentText("tomogram (resire)")
    run(enh, lambda: "tomogram (resire) enhanced" in viewer.layers and enh.run_button.isEnabled(), "enhance")
    tr = TraceWidget(viewer)
    tr.layer_box.setCurrentText("tomogram (resire) enhanced")
    run(tr, lambda: "traced atoms" in viewer.layers and tr.run_button.isEnabled(), "trace")
    timer.stop()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; napari {napari.__version__}")
    print(json.dumps(results, indent=1))
    viewer.close()


if __name__ == "__main__":
    main()
