"""Thread pools sized from the CPUs this process may use, less those busy with other work."""

import subprocess
import sys

import pytest

from napari_aet.core import threads
from napari_aet.core.errors import AETInputError


def _cgroup_v2(tmp_path, text):
    (tmp_path / "cpu.max").write_text(text)
    return tmp_path


def test_cgroup_quota_caps_the_affinity(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "_affinity", lambda: list(range(8)))
    assert threads.usable_cpus(_cgroup_v2(tmp_path, "250000 100000\n")) == 2  # 2.5 CPUs of quota
    assert threads.usable_cpus(_cgroup_v2(tmp_path, "max 100000\n")) == 8
    assert threads.usable_cpus(_cgroup_v2(tmp_path, "50000 100000\n")) == 1
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert threads.usable_cpus(v1) == 3
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1")  # no quota
    assert threads.usable_cpus(v1) == 8


@pytest.mark.parametrize("busy, expected", [(0.0, 2), (0.3, 2), (0.9, 1), (1.0, 1), (2.0, 1), (5.0, 1)])
def test_busy_cpus_shrink_the_pools(monkeypatch, busy, expected):
    monkeypatch.delenv("NAPARI_AET_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_affinity", lambda: [0, 1])
    monkeypatch.setattr(threads, "_cgroup_quota", lambda root=None: None)
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.3: busy)
    plan = threads.plan_threads()
    assert (plan.threads, plan.usable_cpus, plan.source) == (expected, 2, "measured")
    assert "busy with other work" in plan.line()


def test_a_quota_below_the_affinity_caps_the_idle_cpus(monkeypatch):
    monkeypatch.delenv("NAPARI_AET_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "_affinity", lambda: list(range(64)))  # a big shared node, 4 CPUs of quota
    monkeypatch.setattr(threads, "_cgroup_quota", lambda root=None: 4.0)
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.3: 40.0)
    assert threads.plan_threads().threads == 4  # 24 idle CPUs: the quota decides, not the neighbours


def test_the_user_decides(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "busy_cpus", lambda sample_s=0.3: pytest.fail("measured although told"))
    assert threads.plan_threads(3).threads == 3 and threads.plan_threads(3).source == "option"
    monkeypatch.setenv("NAPARI_AET_THREADS", "5")
    assert threads.plan_threads().threads == 5 and threads.plan_threads().source == "environment"
    for bad in ("abc", "0", "-2", "1.5"):
        monkeypatch.setenv("NAPARI_AET_THREADS", bad)
        with pytest.raises(AETInputError, match="NAPARI_AET_THREADS"):
            threads.plan_threads()
    with pytest.raises(AETInputError, match="--threads 0"):
        threads.plan_threads(0)


@pytest.mark.parametrize("torch_first", [False, True])
def test_configure_sets_torch_and_blas_whether_torch_is_loaded_or_not(torch_first):
    code = ("import sys\n" + ("import torch\n" if torch_first else "") +
            "import numpy\nfrom threadpoolctl import threadpool_info\n"
            "from napari_aet.core.threads import configure_threads\n"
            "plan = configure_threads(1)\n"
            "import torch\n"
            "blas = {i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas'}\n"
            "print(plan.threads, torch.get_num_threads(), sorted(blas))\n")
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("OMP_NUM_THREADS", "NAPARI_AET_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split()[:2] == ["1", "1"] and "[1]" in out.stdout, out.stdout


def test_cli_refuses_a_bad_thread_count(tmp_path, capsys):
    from napari_aet.cli import main

    assert main(["reconstruct", str(tmp_path / "none.mrc"), "-o", str(tmp_path / "v.mrc"), "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err
