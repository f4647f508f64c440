"""Building blocks of resource fidelity for the keeper. Imports no asyncio or sqlite3.

Cgroup containment, the watcher, true accounting, CPU and GPU allocation:

- ``cgroup``: what this machine allows (``detect``), a group per job, limits, reading,
  killing, and ``GroupPool``.
- ``watch``: sampling a job's process tree or group; the over-the-limit decision.
- ``account``: a job's peak memory and CPU at its end, from whichever method ran.
- ``procfs``: /proc readers, the keeper's own peak, the subreaper flag.
- ``cpus``, ``gpus``, ``alloc``: which devices a job gets; never one to two jobs.

docs/containment.md says what each method measures, costs and misses.
"""
