"""The memory a process may still take: the machine's, or its cgroup's where that binds."""

import sys

import pytest

from kerastl import _memory as memory

pytestmark = pytest.mark.backend_free


def _group(tmp_path, version, limit, usage, inactive):
    names = {
        "v1": ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
        "v2": ("memory.max", "memory.current", "inactive_file"),
    }[version]
    (tmp_path / names[0]).write_text(f"{limit}\n")
    (tmp_path / names[1]).write_text(f"{usage}\n")
    (tmp_path / "memory.stat").write_text(f"cache 5\n{names[2]} {inactive}\n")
    return [(str(tmp_path), str(tmp_path), names)]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_cgroup_limit_binds_with_its_inactive_cache_counted_free(tmp_path, monkeypatch, version):
    group = _group(tmp_path, version, limit=800 * 2**20, usage=700 * 2**20, inactive=50 * 2**20)
    monkeypatch.setattr(memory, "_cgroup_directories", lambda: group)
    assert memory._cgroup_headroom() == 150 * 2**20
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 10 * 2**30)
    assert memory.available_bytes() == 150 * 2**20
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 100 * 2**20)
    assert memory.available_bytes() == 100 * 2**20  # the machine binds


def test_no_limit_and_unreadable_groups_leave_the_machines_figure(tmp_path, monkeypatch):
    unlimited = _group(tmp_path, "v2", limit="max", usage=10**9, inactive=0)
    monkeypatch.setattr(memory, "_cgroup_directories", lambda: unlimited)
    assert memory._cgroup_headroom() is None
    v1_unlimited = _group(tmp_path, "v1", limit=9223372036854771712, usage=10**9, inactive=0)
    monkeypatch.setattr(memory, "_cgroup_directories", lambda: v1_unlimited)
    assert memory._cgroup_headroom() is None
    names = ("memory.max", "memory.current", "inactive_file")
    missing = [(str(tmp_path / "absent"), str(tmp_path / "absent"), names)]
    monkeypatch.setattr(memory, "_cgroup_directories", lambda: missing)
    assert memory._cgroup_headroom() is None
    # Over its limit (the kernel reclaiming): no room, never a negative figure.
    full = _group(tmp_path, "v2", limit=100, usage=300, inactive=0)
    monkeypatch.setattr(memory, "_cgroup_directories", lambda: full)
    assert memory._cgroup_headroom() == 0


def test_a_parents_limit_binds_a_v1_group_without_its_own(tmp_path, monkeypatch):
    group = _group(tmp_path, "v1", limit=9223372036854771712, usage=100, inactive=0)
    with open(tmp_path / "memory.stat", "a") as f:
        f.write(f"hierarchical_memory_limit {2**30}\n")
    monkeypatch.setattr(memory, "_cgroup_directories", lambda: group)
    assert memory._cgroup_headroom() == 2**30 - 100


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")
def test_this_machine_reports_what_proc_meminfo_says():
    available = memory.available_bytes()
    with open("/proc/meminfo") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert 0 < available <= total


def test_a_v2_parents_limit_binds_a_child_without_its_own(tmp_path, monkeypatch):
    names = ("memory.max", "memory.current", "inactive_file")
    child = tmp_path / "job" / "step"
    child.mkdir(parents=True)
    (child / "memory.max").write_text("max\n")
    (child / "memory.current").write_text("100\n")
    _group(tmp_path / "job", "v2", limit=1000, usage=400, inactive=50)
    monkeypatch.setattr(memory, "_cgroup_directories", lambda: [(str(child), str(tmp_path), names)])
    assert memory._cgroup_headroom() == 650  # the parent's 1000 - 400 + 50
    # The child's own, tighter limit binds instead.
    (child / "memory.max").write_text("300\n")
    assert memory._cgroup_headroom() == 200
