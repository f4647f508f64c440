"""Reading /proc/self/mountinfo and /proc/self/cgroup, and the choice ``detect`` makes on
layouts other than this machine's (a pure v2 host with a delegated group, a v1 host
without root, no cgroups at all). The layouts are directories laid out as the kernel lays
out a cgroup mount; the real hierarchies of this machine are tested in test_cgroup_v*."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from sjq.contain.cgroup import V2Backend, detect, parse_mountinfo, parse_proc_cgroup
from sjq.contain.cgroup.fs import key_values

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 /docker/abc /sys/fs/cgroup/cpu\\040set rw - cgroup cgroup rw,cpuset
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:7 - cgroup2 cgroup2 rw
"""


def test_parse_mountinfo() -> None:
    ms = parse_mountinfo(HYBRID)
    assert [(m.fstype, m.point) for m in ms] == [
        ("cgroup", "/sys/fs/cgroup/cpuacct"),
        ("cgroup", "/sys/fs/cgroup/memory"),
        ("cgroup", "/sys/fs/cgroup/cpu set"),  # \040 is a space
        ("cgroup2", "/sys/fs/cgroup/unified"),
    ]
    assert ms[2].root == "/docker/abc"
    assert "cpuset" in ms[2].options


def test_parse_proc_cgroup() -> None:
    got = parse_proc_cgroup("12:cpu,cpuacct:/a\n4:memory:/process_api/x\n1:name=systemd:/\n0::/u\n")
    assert got == {
        "cpu": "/a",
        "cpuacct": "/a",
        "memory": "/process_api/x",
        "name=systemd": "/",
        "": "/u",
    }


@given(st.text())
def test_parsers_take_any_text(text: str) -> None:
    parse_mountinfo(text)
    parse_proc_cgroup(text)


_KEYS = st.sampled_from(["rss", "total_rss", "cache", "shmem", "user", "system", "oom_kill"])


@given(st.lists(st.tuples(_KEYS, st.integers(-(2**63), 2**64)), unique_by=lambda kv: kv[0]))
def test_key_values_finds_each_key_at_the_start_of_a_line(pairs: list[tuple[str, int]]) -> None:
    """The control files' ``key value`` lines, looked up key by key (a pool reads
    memory.stat after every job): the same as splitting every line, whatever the order,
    with keys that end alike (rss, total_rss) and with or without a final newline."""
    text = "".join(f"{k} {v}\n" for k, v in pairs).encode()
    want = dict(pairs)
    wanted = ("rss", "total_rss", "shmem", "user")
    expect = {k: want[k] for k in wanted if k in want}
    assert key_values(text, *wanted) == expect
    assert key_values(text.rstrip(b"\n"), *wanted) == expect


def v2_host(tmp_path: Path, controllers: str, procs: str, subtree: str = "") -> tuple[str, str]:
    mount = tmp_path / "cg"
    group = mount / "user.slice" / "sjq.service"
    group.mkdir(parents=True)
    (group / "cgroup.controllers").write_text(controllers + "\n")
    (group / "cgroup.subtree_control").write_text(subtree + "\n")
    (group / "cgroup.procs").write_text(procs)
    mi = tmp_path / "mountinfo"
    mi.write_text(f"41 31 0:38 / {mount} rw - cgroup2 cgroup2 rw\n")
    pc = tmp_path / "cgroup"
    pc.write_text("0::/user.slice/sjq.service\n")
    return str(mi), str(pc)


def test_a_delegated_v2_group_with_memory_is_chosen(tmp_path: Path) -> None:
    mi, pc = v2_host(tmp_path, "cpuset cpu io memory pids", f"{os.getpid()}\n")
    d = detect(mountinfo=mi, self_cgroup=pc, euid=1000, name="sjq.7")
    assert isinstance(d.backend, V2Backend)
    assert d.backend.memory
    assert d.backend.cpuset
    assert d.why == f"cgroup v2 (cpuset, memory) below {tmp_path}/cg/user.slice/sjq.service/sjq.7"


def test_a_v2_group_shared_with_other_processes_is_not_taken(tmp_path: Path) -> None:
    mi, pc = v2_host(tmp_path, "memory pids", f"{os.getpid()}\n1\n")
    d = detect(mountinfo=mi, self_cgroup=pc, euid=1000, name="sjq.7")
    assert isinstance(d.backend, V2Backend)
    assert not d.backend.memory
    assert "also holds processes that are not sjq's (1)" in d.why
    assert "systemd-run --user --scope -p Delegate=yes" in d.why


def test_v1_without_root_falls_back_to_the_watcher(tmp_path: Path) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text(HYBRID.replace("/sys/fs/cgroup/unified", str(tmp_path / "none")))
    pc = tmp_path / "cgroup"
    pc.write_text("4:memory:/\n2:cpuacct:/\n0::/\n")
    d = detect(mountinfo=str(mi), self_cgroup=str(pc), euid=1000, versions=("v1",))
    assert d.backend is None
    assert d.why == "watch: no writable cgroup hierarchy: cgroup v1 needs root"


def test_no_cgroups_at_all(tmp_path: Path) -> None:
    mi = tmp_path / "mountinfo"
    mi.write_text("22 1 0:21 / /proc rw - proc proc rw\n")
    pc = tmp_path / "cgroup"
    pc.write_text("")
    d = detect(mountinfo=str(mi), self_cgroup=str(pc), euid=0)
    assert d.backend is None
    assert d.why == (
        "watch: no writable cgroup hierarchy: no cgroup v2 mount; no cgroup v1 memory hierarchy"
    )
    d = detect(mountinfo=str(tmp_path / "missing"), self_cgroup=str(pc))
    assert d.backend is None
    assert d.why.startswith("watch: cannot read cgroup information:")


def test_a_group_outside_the_mounted_root_is_not_ours(tmp_path: Path) -> None:
    """In a container the hierarchy may be mounted from a subdirectory: a path outside
    it is not visible, and detection says so instead of writing elsewhere."""
    mi = tmp_path / "mountinfo"
    mi.write_text(f"41 31 0:38 /docker/abc {tmp_path} rw - cgroup2 cgroup2 rw\n")
    pc = tmp_path / "cgroup"
    pc.write_text("0::/other\n")
    d = detect(mountinfo=str(mi), self_cgroup=str(pc), euid=0, versions=("v2",))
    assert d.backend is None
    assert "our group is not visible under" in d.why
