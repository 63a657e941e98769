#!/usr/bin/env bash
# What a new user meets: a fresh virtual environment, the README's first command as written
# (the pinned CPU build of torch, then the package with no extras), the demo without a
# window, and an import of every module that needs no Qt binding. CI runs this before the
# test extras are installed, so an import that only an extra brings in fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
# The README's first command, with --no-view and the demo folder in the scratch space.
README_INSTALL='pip install "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu'
grep -qF "$README_INSTALL" README.md || { echo "README's install line changed: update $0" >&2; exit 1; }
python -m pip install -q "torch==2.13.0" --extra-index-url https://download.pytorch.org/whl/cpu 2>&1 \
  | grep -v -e "Retrying" -e "is ignored" || true
python -c "import torch" || { echo "torch did not install" >&2; exit 1; }
python -m pip install -q -e "$root" 2>&1 | grep -v -e "is ignored" || true
python -c "import napari_aet" || { echo "napari-aet did not install" >&2; exit 1; }
if ! (cd "$work" && napari-aet demo --no-view -o "$work/demo" > "$work/demo.log" 2>&1); then
  tail -40 "$work/demo.log" >&2
  echo "napari-aet demo failed in a fresh install (above)" >&2
  exit 1
fi
grep -E "^(built-in sample|traced|total|network)" "$work/demo.log"
# Every module a user may import without a Qt binding (the _qt widgets need one: [all] brings it).
python - <<'PY'
import importlib, pkgutil, napari_aet
failed = []
for m in pkgutil.walk_packages(napari_aet.__path__, "napari_aet."):
    if m.name.startswith("napari_aet._qt"):
        continue
    try:
        importlib.import_module(m.name)
    except Exception as exc:  # report every module that fails, not just the first
        failed.append(f"{m.name}: {type(exc).__name__}: {exc}")
if failed:
    raise SystemExit("modules that do not import in a fresh install:\n" + "\n".join(failed))
print("fresh install: every module imports")
PY
