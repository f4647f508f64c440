"""Which GPUs sjq manages. Imports no asyncio or sqlite3 (subprocess: nvidia-smi, at start).

``sjq.gpus`` (``auto``, ``none`` or ids), discovery through ``nvidia-smi -L`` or
/proc/driver/nvidia/gpus, limited by the daemon's own ``CUDA_VISIBLE_DEVICES``, and
``SJQ_GPUS`` for a daemon started inside a job.

Ids are strings as NVIDIA names them, and the job's ``CUDA_VISIBLE_DEVICES`` is exactly
the ids it got:

- a whole GPU by its index in PCI bus order (``0``, ``1``; jobs get
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA counts as ``nvidia-smi`` does);
- a GPU in MIG mode cannot be used whole: each of its MIG devices is one device, named
  by its UUID (``MIG-...``);
- ids given in ``sjq.gpus``, ``SJQ_GPUS`` or the daemon's ``CUDA_VISIBLE_DEVICES`` as
  UUIDs (``GPU-...``) are handed out as written.

``CUDA_VISIBLE_DEVICES`` is read as CUDA reads it: indexes or UUIDs (a unique prefix is
enough), the list ending at the first entry that names no device; empty, ``-1`` or
``NoDevFiles`` mean none.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Gpu",
    "GpuError",
    "Gpus",
    "discover_gpus",
    "first_free",
    "parse_gpu_ids",
    "parse_nvidia_smi",
    "read_proc_gpus",
]

SMI_TIMEOUT = 10.0  # seconds: nvidia-smi hangs on a wedged driver; the daemon must still start
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:/._-]*")
_GPU_LINE = re.compile(r"^GPU (\d+): (.*?)\s*\(UUID: (GPU-[^)\s]+)\)\s*$")
_MIG_LINE = re.compile(r"^\s+MIG\s+(.*?)\s+Device\s+(\d+):\s*\(UUID: (MIG-[^)\s]+)\)\s*$")


class GpuError(ValueError):
    """A GPU setting could not be read; the message names the setting and the bad part."""


@dataclass(frozen=True, slots=True)
class Gpu:
    """One device a job can be given: a whole GPU or one MIG device of a GPU."""

    id: str  # what the job's CUDA_VISIBLE_DEVICES holds
    index: int  # the GPU's index in PCI bus order (of the parent GPU for a MIG device)
    uuid: str  # GPU-... or MIG-...
    name: str = ""
    parent: str = ""  # a MIG device's GPU's UUID


@dataclass(frozen=True, slots=True)
class Gpus:
    """The managed devices, in the order they are handed out, and where they came from
    (said once in the daemon's log)."""

    ids: tuple[str, ...]
    source: str


def parse_gpu_ids(text: str, what: str = "sjq.gpus") -> tuple[str, ...]:
    """``0,1,GPU-8a..`` -> ("0", "1", "GPU-8a.."). Empty is none."""
    ids = [p.strip() for p in text.split(",")]
    if ids == [""]:
        return ()
    for p in ids:
        if not _ID_RE.fullmatch(p):
            raise GpuError(
                f"{what}: cannot read GPU id {p!r} in {text!r} (expected indexes such as"
                " 0,1 or UUIDs such as GPU-..., MIG-...)"
            )
    if len(set(ids)) != len(ids):
        raise GpuError(f"{what}: a GPU id is listed twice in {text!r}")
    return tuple(ids)


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """The devices ``nvidia-smi -L`` lists: whole GPUs, or the MIG devices of GPUs in MIG
    mode instead of those GPUs."""
    gpus: list[Gpu] = []
    migs: dict[int, list[Gpu]] = {}
    current: Gpu | None = None
    for line in text.splitlines():
        m = _GPU_LINE.match(line)
        if m:
            current = Gpu(m.group(1), int(m.group(1)), m.group(3), m.group(2))
            gpus.append(current)
            continue
        m = _MIG_LINE.match(line)
        if m and current is not None:
            migs.setdefault(current.index, []).append(
                Gpu(
                    m.group(3),
                    current.index,
                    m.group(3),
                    f"{current.name} MIG {m.group(1)}",
                    current.uuid,
                )
            )
    out: list[Gpu] = []
    for g in gpus:
        out.extend(migs.get(g.index, [g]))
    return out


def read_proc_gpus(root: str = "/proc/driver/nvidia/gpus") -> list[Gpu]:
    """Whole GPUs as the driver lists them (one directory per PCI bus id); the index is
    the position in bus order. Knows nothing of MIG (use nvidia-smi for that)."""
    try:
        buses = sorted(os.listdir(root))
    except OSError:
        return []
    out: list[Gpu] = []
    for i, bus in enumerate(buses):
        info: dict[str, str] = {}
        try:
            with open(os.path.join(root, bus, "information")) as f:
                for line in f:
                    key, sep, value = line.partition(":")
                    if sep:
                        info[key.strip()] = value.strip()
        except OSError:
            continue
        out.append(Gpu(str(i), i, info.get("GPU UUID", ""), info.get("Model", "")))
    return out


def _visible(devs: list[Gpu], cvd: str) -> list[Gpu]:
    """CUDA's reading of CUDA_VISIBLE_DEVICES over ``devs``. An index or UUID of a GPU in
    MIG mode stands for all its MIG devices."""
    if cvd.strip() in ("", "-1", "NoDevFiles"):
        return []
    out: dict[str, Gpu] = {}
    for raw in cvd.split(","):
        entry = raw.strip()
        if entry.isdigit():
            found = [g for g in devs if g.index == int(entry)]
        elif entry:
            found = [g for g in devs if g.uuid.startswith(entry) or g.id == entry]
            if len({g.uuid for g in found}) > 1:
                found = []  # an ambiguous prefix names no device
            found = found or [g for g in devs if g.parent and g.parent.startswith(entry)]
            # a whole GPU named by UUID keeps that name
            found = [g if g.parent else Gpu(entry, g.index, g.uuid, g.name) for g in found]
        else:
            found = []
        if not found:
            break  # CUDA ignores the rest of the list after an entry it cannot use
        for g in found:
            out.setdefault(g.uuid or g.id, g)
    return list(out.values())


def discover_gpus(
    setting: str,
    env: Mapping[str, str],
    *,
    smi: Sequence[str] = ("nvidia-smi", "-L"),
    proc: str = "/proc/driver/nvidia/gpus",
) -> Gpus:
    """The devices to manage for ``sjq.gpus = setting`` (``auto``, ``none`` or ids).

    ``SJQ_GPUS`` in ``env`` (a daemon started inside a job) replaces the setting: such a
    daemon manages exactly the devices its job was given."""
    setting = setting.strip()
    if "SJQ_GPUS" in env:
        return Gpus(parse_gpu_ids(env["SJQ_GPUS"], "SJQ_GPUS"), "SJQ_GPUS (the enclosing job's)")
    if setting == "none":
        return Gpus((), "sjq.gpus = none")
    if setting != "auto":
        return Gpus(parse_gpu_ids(setting), "sjq.gpus")
    devs, source = _probe(smi, proc)
    if "CUDA_VISIBLE_DEVICES" in env:
        devs = _visible(devs, env["CUDA_VISIBLE_DEVICES"])
        source += ", limited by CUDA_VISIBLE_DEVICES"
    return Gpus(tuple(g.id for g in devs), source)


def _probe(smi: Sequence[str], proc: str) -> tuple[list[Gpu], str]:
    why = ""
    try:
        r = subprocess.run(
            list(smi), capture_output=True, text=True, timeout=SMI_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        why = f"{smi[0]}: {getattr(e, 'strerror', None) or e}"
    else:
        if r.returncode == 0:
            return parse_nvidia_smi(r.stdout), f"{' '.join(smi)}"
        why = f"{smi[0]} exited with {r.returncode}: {r.stderr.strip()[:200]}"
    devs = read_proc_gpus(proc)
    if devs:
        return devs, f"{proc} ({why})"
    return [], f"no GPU found ({why}; no {proc})"


def first_free(free: Collection[str], n: int) -> tuple[str, ...] | None:
    """The chooser for GPUs: the first ``n`` in the managed order (``free`` is given in
    that order by ``alloc.Allocator``)."""
    ids = list(free)
    return tuple(ids[:n]) if n <= len(ids) else None
