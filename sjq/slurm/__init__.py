"""Slurm as a back end, the command layer; imports none of its modules (import them by name).

- ``sjq.slurm.args``: pure; a job's fields -> the ``sbatch`` command line; ``sbatch
  --parsable`` output -> the Slurm job id; the tag that finds a job again after a crash.
- ``sjq.slurm.parse``: pure; ``squeue``, ``sacct`` and ``scontrol show config`` output ->
  typed records.
- ``sjq.slurm.states``: pure; Slurm's job states -> sjq's states, and why an ended job ended.
- ``sjq.slurm.errors``: pure; the exception tree, and a failed command's exit status and
  stderr -> transient or definite error.
- ``sjq.slurm.commands``: runs the commands (blocking, with a timeout, counted). Meant for a
  worker thread or a helper process, never the event loop.
- ``sjq.slurm.track``: pure; one status answer -> what changed for the jobs sjq follows
  (found by tag, waiting, began, ended, missing), and the next poll interval.
- ``sjq.slurm.startup``: the checks before the daemon's loop runs: Slurm's commands usable,
  this database's daemon id, no ``sbatch`` of an earlier daemon still under way.
- ``sjq.slurm.backend``: the back end in the daemon's event loop (``sjq.backend = slurm``):
  submits, follows, cancels, holds and releases, running the commands in worker threads.

docs/slurm.md describes what each Slurm command tells and what is lost without slurmdbd.
"""
