"""GPU discovery and allocation. This machine has no GPU: discovery runs a real
executable that prints what `nvidia-smi -L` prints on GPU machines, and reads a
/proc/driver/nvidia tree laid out as the driver lays it out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sjq.contain.alloc import AllocationError, Allocator
from sjq.contain.gpus import (
    GpuError,
    discover_gpus,
    first_free,
    parse_gpu_ids,
    parse_nvidia_smi,
    read_proc_gpus,
)

U0 = "GPU-5b9e8e1c-2f0b-4e4c-8d8c-7c1f2a3b4c5d"
U1 = "GPU-77777777-2f0b-4e4c-8d8c-7c1f2a3b4c5d"
U2 = "GPU-88888888-2f0b-4e4c-8d8c-7c1f2a3b4c5d"
M0 = "MIG-1a2b3c4d-0000-1111-2222-333344445555"
M1 = "MIG-9a2b3c4d-0000-1111-2222-333344445555"
SMI = f"""GPU 0: NVIDIA A100-SXM4-40GB (UUID: {U0})
  MIG 3g.20gb     Device  0: (UUID: {M0})
  MIG 3g.20gb     Device  1: (UUID: {M1})
GPU 1: Tesla V100-SXM2-16GB (UUID: {U1})
GPU 2: Tesla V100-SXM2-16GB (UUID: {U2})
"""
PLAIN = f"""GPU 0: Tesla T4 (UUID: {U0})
GPU 1: Tesla T4 (UUID: {U1})
GPU 2: Tesla T4 (UUID: {U2})
"""


def fake_smi(tmp_path: Path, output: str, code: int = 0) -> tuple[str, ...]:
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\nexit {code}\n")
    exe.chmod(0o755)
    return (str(exe), "-L")


def test_nvidia_smi_listing_mig_devices_replace_their_gpu() -> None:
    devs = parse_nvidia_smi(SMI)
    assert [g.id for g in devs] == [M0, M1, "1", "2"]
    assert devs[0].parent == U0
    assert devs[0].index == 0
    assert devs[2].uuid == U1
    assert devs[2].name == "Tesla V100-SXM2-16GB"


def test_auto_discovery_through_nvidia_smi(tmp_path: Path) -> None:
    g = discover_gpus("auto", {}, smi=fake_smi(tmp_path, PLAIN))
    assert g.ids == ("0", "1", "2")
    assert "nvidia-smi" in g.source


@pytest.mark.parametrize(
    ("cvd", "want"),
    [
        ("2,0", ("2", "0")),
        ("1", ("1",)),
        ("", ()),
        ("-1", ()),
        ("NoDevFiles", ()),
        ("0,7,1", ("0",)),  # CUDA stops at the first entry that names no device
        (f"{U2[:12]},1", (U2[:12], "1")),  # a unique UUID prefix, kept as written
        ("GPU-", ()),  # ambiguous prefix
    ],
)
def test_limited_by_the_daemons_cuda_visible_devices(
    tmp_path: Path, cvd: str, want: tuple[str, ...]
) -> None:
    g = discover_gpus("auto", {"CUDA_VISIBLE_DEVICES": cvd}, smi=fake_smi(tmp_path, PLAIN))
    assert g.ids == want
    assert "CUDA_VISIBLE_DEVICES" in g.source


def test_a_mig_gpu_named_in_cuda_visible_devices_stands_for_its_mig_devices(
    tmp_path: Path,
) -> None:
    g = discover_gpus("auto", {"CUDA_VISIBLE_DEVICES": "0,2"}, smi=fake_smi(tmp_path, SMI))
    assert g.ids == (M0, M1, "2")
    g = discover_gpus("auto", {"CUDA_VISIBLE_DEVICES": M1}, smi=fake_smi(tmp_path, SMI))
    assert g.ids == (M1,)


def test_proc_driver_tree_when_nvidia_smi_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "gpus"
    for bus, uuid, minor in (("0000:3b:00.0", U1, 1), ("0000:1a:00.0", U0, 0)):
        (root / bus).mkdir(parents=True)
        (root / bus / "information").write_text(
            f"Model: \t\t Tesla V100\nIRQ:   \t\t 42\nGPU UUID: \t {uuid}\n"
            f"Bus Location: \t {bus}\nDevice Minor: \t {minor}\n"
        )
    assert [(g.id, g.uuid) for g in read_proc_gpus(str(root))] == [("0", U0), ("1", U1)]
    g = discover_gpus("auto", {}, smi=(str(tmp_path / "no-such-smi"), "-L"), proc=str(root))
    assert g.ids == ("0", "1")
    assert str(root) in g.source
    assert "no-such-smi" in g.source


def test_no_gpu_on_this_machine_is_said_plainly() -> None:
    if os.path.exists("/proc/driver/nvidia/gpus"):
        pytest.skip("this machine has NVIDIA GPUs")
    g = discover_gpus("auto", {}, smi=("/nonexistent/nvidia-smi", "-L"))
    assert g.ids == ()
    assert g.source.startswith("no GPU found")


def test_a_failing_nvidia_smi_falls_back(tmp_path: Path) -> None:
    g = discover_gpus(
        "auto",
        {},
        smi=fake_smi(tmp_path, "NVIDIA-SMI has failed\n", 9),
        proc=str(tmp_path / "none"),
    )
    assert g.ids == ()
    assert "exited with 9" in g.source


def test_settings_none_ids_and_sjq_gpus() -> None:
    assert discover_gpus("none", {"CUDA_VISIBLE_DEVICES": "0"}).ids == ()
    assert discover_gpus(" 0, 1,GPU-abc ", {}).ids == ("0", "1", "GPU-abc")
    # a daemon started inside a job manages that job's devices only
    inner = discover_gpus("0,1,2,3", {"SJQ_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "2,3"})
    assert inner.ids == ("2", "3")
    assert "SJQ_GPUS" in inner.source
    assert discover_gpus("auto", {"SJQ_GPUS": ""}).ids == ()


@pytest.mark.parametrize("bad", ["0,,1", "0,0", "gpu 1", "0;1", "*"])
def test_bad_gpu_ids_name_the_setting(bad: str) -> None:
    with pytest.raises(GpuError, match=r"sjq\.gpus"):
        parse_gpu_ids(bad)
    with pytest.raises(GpuError, match="SJQ_GPUS"):
        discover_gpus("auto", {"SJQ_GPUS": bad})


ids = st.lists(st.sampled_from(["0", "1", "2", "3", M0, M1, U2]), unique=True, min_size=1)
gpu_ops = st.lists(
    st.tuples(
        st.sampled_from(["take", "release", "hand_over"]),
        st.integers(0, 6),
        st.integers(0, 6),
        st.integers(0, 3),
    ),
    max_size=50,
)


@given(ids, gpu_ops)
def test_never_the_same_gpu_to_two_running_jobs(devices: list[str], program: list) -> None:
    alloc: Allocator[str] = Allocator(devices, first_free)
    for op, a, b, n in program:
        try:
            if op == "take":
                got = alloc.take(a, n)
                assert list(got) == [d for d in devices if d in got]  # managed order
            elif op == "release":
                alloc.release(a)
            elif a in alloc.held and b not in alloc.held:
                before = set(alloc.held[a])
                assert set(alloc.hand_over(a, b, n)) <= before
        except AllocationError:
            pass  # asked for more than is free, or a job twice: refused, nothing changed
        held = [d for g in alloc.held.values() for d in g]
        assert len(held) == len(set(held))
        assert set(held) | alloc.free == set(devices)
