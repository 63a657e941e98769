#!/usr/bin/env bash
# The project's test command (README, CI): install what a fresh machine lacks, then run
# every test, GUI tests included, under a virtual X display with Mesa GL.
set -euo pipefail
cd "$(dirname "$0")/.."

# System libraries napari needs for a real GL context under Xvfb (Debian names).
APT_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0
 libxcb-cursor0 libdbus-1-3 libfontconfig1"
missing=""
for p in $APT_PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing:$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "missing system packages:$missing (install them with apt-get as root)" >&2
    exit 1
  fi
fi

# The pinned CPU build of torch first, so the project's torch range never pulls a CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test]"

xvfb-run -a -s "-screen 0 1920x1080x24" python -m pytest "$@"  # the screen a person has
