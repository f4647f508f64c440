"""The keeper: the one part of sjq that starts, signals and reaps processes.

Keeper processes are forked from the daemon before its event loop starts and are the
parents of every job, so that jobs outlive a daemon crash. What lives where:

- `messages`: every message between the daemon and a keeper, one typed record each;
- `journal`: what a keeper writes before it tells anyone, and how recovery reads it;
- `tokens`: the arm-token pipe through which keepers start the next jobs by themselves;
- `spawn`: starting one job (script, outputs, environment, identity, ``posix_spawn``);
- `janitor`: TMPDIRs kept ready, and what ended jobs left, cleaned off the critical path;
- `procs`: naming processes (pid + start time) and signalling process groups;
- `guard`: a keeper's containment and measurement of its jobs (cgroups, the watcher);
- `loop`: the keeper process itself; `handle`: `KeeperHandle`, the daemon's end of one;
- `adopt`: jobs of an earlier daemon, watched with pidfds by the daemon that re-adopts them.

Nothing here imports asyncio or sqlite3.
"""

from sjq.keeper.handle import KeeperHandle
from sjq.keeper.tokens import ArmPipe

__all__ = ["ArmPipe", "KeeperHandle"]
