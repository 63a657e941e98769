"""The demo on a machine shared with another job: wall time with the thread pools sized as
before (one thread per CPU: --threads N_CPUS), as napari-aet now sizes them at start (no
option), and with one thread, each beside a competing job that keeps torch busy with as many
threads as there are CPUs (what another user's tomography job does).

    python benchmarks/bench_busy_demo.py [--repeats 1] [--out benchmarks/results/busy_demo.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPETITOR = """
import os, time, torch
torch.set_num_threads(os.cpu_count())
x = torch.randn(1, 8, 64, 64, 64); w = torch.randn(8, 8, 3, 3, 3)
while True:
    torch.nn.functional.conv3d(x, w, padding=1)
"""


def _demo(threads: str, work: Path) -> dict:
    cmd = [sys.executable, "-m", "napari_aet.cli", "demo", "--no-view", "-o", str(work / f"demo_{threads}")]
    if threads != "auto":
        cmd += ["--threads", threads]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NAPARI_AET_THREADS")}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = [l for l in (out.stdout + out.stderr).splitlines() if l.startswith(("traced", "total")) or "threads" in l]
    return {"threads": threads, "wall_s": round(wall, 1), "returncode": out.returncode, "lines": lines}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    n = str(os.cpu_count() or 1)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for threads in (n, "auto", "1"):
                competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
                try:
                    time.sleep(3)  # the competitor is running before the demo starts, as on a shared machine
                    runs.append(_demo(threads, Path(tmp)))
                finally:
                    competitor.kill()
                    competitor.wait()
                print(runs[-1], flush=True)
    result = {"command": " ".join(sys.argv), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
