"""U-Net size vs CPU inference time at 144³ (issue 5: choosing the default architecture).

Run:  python benchmarks/bench_unet_size.py

Untrained networks (time does not depend on the weights), one 144³ tile, eval mode, no
gradient, the machine's torch threads; median of 3 after a warm-up.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from napari_aet.core.unet import UNet3D, UNetConfig


def main():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 144, 144, 144)
    rows = []
    for depth, width in ((3, 8), (3, 12), (3, 16), (4, 8), (4, 12)):
        model = UNet3D(UNetConfig(depth=depth, base_width=width)).eval()
        with torch.no_grad():
            model(x)
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        row = {"depth": depth, "base_width": width, "parameters": model.n_parameters(),
               "seconds_144": float(np.median(times))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| depth | base width | parameters | CPU inference, one 144³ tile (s) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['depth']} | {r['base_width']} | {r['parameters'] / 1e6:.2f} M | {r['seconds_144']:.1f} |")


if __name__ == "__main__":
    main()
