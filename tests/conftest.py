import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_sim():
    """A small noise-free simulation (64³, 0.4 Å, ±60° in 10° steps) shared by tests."""
    from napari_aet.core.simulate import SimulationConfig, simulate

    return simulate(SimulationConfig(size=1.6, n_voxels=64, pixel_size=0.4, tilt_range=60, tilt_step=10, seed=11))


@pytest.fixture
def tilts_array():
    rng = np.random.default_rng(0)
    return rng.random((5, 12, 10)).astype(np.float32)


import os
import sys

# napari's image layers need a real GL context: GUI tests run under xvfb-run (scripts/test.sh).
_NO_DISPLAY = sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
collect_ignore = ["gui"] if _NO_DISPLAY else []


def pytest_report_header(config):
    if _NO_DISPLAY:
        return "GUI tests (tests/gui) not collected: no DISPLAY; run scripts/test.sh (xvfb-run) for the full suite"


@pytest.fixture(autouse=True)
def _private_home(tmp_path, monkeypatch):
    """Settings and autosaved sessions go to a per-test folder, never the user's."""
    monkeypatch.setenv("NAPARI_AET_HOME", str(tmp_path / "napari-aet-home"))
