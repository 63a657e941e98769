"""What a training pair and a training step cost on this machine (issue 5: sizing the run).

Run:  python benchmarks/bench_training_cost.py [--config benchmarks/configs/unet_pt.json]

Times one training pair (simulation + RESIRE reconstruction, the dominant cost) at the
config's volume size with 1 and with all torch threads, and one optimizer step (forward +
backward + AdamW) of the config's U-Net at its crop and batch size on the CPU; then prints
what generation and training of the config would take here.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from napari_aet.core.training import TrainingConfig, load_config, make_pair
from napari_aet.core.unet import UNet3D, UNetConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="benchmarks/configs/unet_pt.json")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    cfg: TrainingConfig = load_config(args.config)
    out = {"config": args.config, "voxels": cfg.voxels, "crop": cfg.crop, "batch_size": cfg.batch_size,
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        t = []
        for seed in (900001, 900002, 900003):
            t0 = time.perf_counter()
            make_pair(cfg, seed)
            t.append(time.perf_counter() - t0)
        out[f"pair_seconds_{threads}_threads"] = float(np.median(t))
    torch.set_num_threads(out["torch_threads"])
    torch.manual_seed(0)
    model = UNet3D(UNetConfig(**cfg.unet))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(cfg.batch_size, 1, cfg.crop, cfg.crop, cfg.crop)
    times = []
    for _ in range(args.steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    out["step_seconds"] = float(np.median(times[1:]))
    pairs = cfg.n_train + cfg.n_val
    # generation runs one single-threaded worker per core
    out["generation_hours_all_cores"] = pairs * out["pair_seconds_1_threads"] / os.cpu_count() / 3600
    steps_gpu_run = 3480  # the shipped model's H200 run: 58 epochs x 60 steps in 5 minutes
    out["training_hours_for_3480_steps"] = steps_gpu_run * out["step_seconds"] / 3600
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
