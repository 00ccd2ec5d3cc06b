"""The benchmarks' report of what else used the cores while they ran (benchmarks/_common.py)."""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_common", Path(__file__).parents[1] / "benchmarks" / "_common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)


def test_a_sample_reads_busy_and_stolen_seconds_from_proc_stat(tmp_path):
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(f"cpu  {3 * ticks} {ticks} {2 * ticks} 999 7 {ticks} {ticks} {5 * ticks} 0 0\ncpu0 1 2 3\n")
    sample = common.core_sample(stat)
    assert sample.busy == pytest.approx(8.0)  # user + nice + system + irq + softirq; idle and iowait are not busy
    assert sample.steal == pytest.approx(5.0)
    assert common.core_sample(tmp_path / "missing") is None


def _use(start, end, cores=2):
    samples = iter([start, end])
    return common.CoreUse(lambda: next(samples), cores=cores)


def test_other_processes_are_the_busy_time_this_process_did_not_take():
    start = common.CoreSample(wall=0.0, own=1.0, busy=10.0, steal=0.0)
    shared = _use(start, common.CoreSample(wall=10.0, own=11.0, busy=25.0, steal=1.0))
    assert shared.shares() == pytest.approx({"own": 0.5, "others": 0.25, "steal": 0.05})
    assert "WARNING" in _use(start, common.CoreSample(wall=10.0, own=11.0, busy=25.0, steal=1.0)).report()
    quiet = _use(start, common.CoreSample(wall=10.0, own=11.0, busy=20.5, steal=0.4)).report()
    assert "other processes 2.5%" in quiet and "steal 2.0%" in quiet and "WARNING" not in quiet
    stolen = _use(start, common.CoreSample(wall=10.0, own=11.0, busy=21.0, steal=2.0)).report()
    assert "WARNING" in stolen  # 10 % stolen by the hypervisor, nothing by other processes
    # The machine's busy count moves in clock ticks, this process's time finer: never a negative share.
    rounded = _use(start, common.CoreSample(wall=10.0, own=11.0, busy=19.99, steal=0.0))
    assert rounded.shares()["others"] == 0.0


def test_without_proc_stat_the_report_says_it_measured_nothing():
    assert "not measured" in common.CoreUse(lambda: None).report()


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux only")
def test_on_this_machine_a_busy_process_shows_as_its_own_use():
    use = common.CoreUse()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    shares = use.shares()
    assert shares["own"] > 0 and shares["others"] >= 0 and shares["steal"] >= 0
