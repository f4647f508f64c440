"""`sjq submit` (directives, wrapping, --export, --wait); no asyncio, psutil, sqlite3, daemon.

The hot path of the CLI: imports sjq.units, sjq.config and sjq.protocol (through the client)
and nothing else of sjq; never asyncio, psutil, sqlite3 or the daemon's modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._args import Command, HelpRequested, Opt, Parsed, UsageError, parse
from ._exceptions import RequestRejected
from ._script import wrap_command
from ._submit_options import options as _options
from .cli import EXIT_ERROR, EXIT_OK, Context

if TYPE_CHECKING:
    from ._client import Client

__all__ = ["SUBMIT", "directives", "outcome_status", "run_submit"]

DIRECTIVE = "#SJQ"
# Options that say how `sjq submit` behaves rather than what the job is: not for a script.
_NOT_IN_SCRIPTS = frozenset({"wait", "config", "socket", "help"})

SUBMIT = Command(
    "submit",
    "[options] SCRIPT | - | -- COMMAND [ARGS...]",
    "Queue a job and print its id on stdout (only the id, so `id=$(sjq submit job.sh)` works).\n"
    "The job is a script file (it must start with #!, e.g. #!/bin/bash), a script read from\n"
    "standard input (-), or a command and its arguments after -- (run by /bin/sh with exec,\n"
    "quoting kept). If no daemon is running, one is started (with auto-shutdown on).",
    (
        Opt(
            ("-m", "--mem"),
            "mem",
            "SIZE",
            "memory to reserve, and the most the job may use: 512M, 2G, 1.5G (default"
            " sjq.defaults.mem)",
        ),
        Opt(("-p", "--procs"), "procs", "N", "CPUs to reserve (default sjq.defaults.procs)"),
        Opt(("--gpus",), "gpus", "N", "GPUs to reserve (default 0): see CUDA_VISIBLE_DEVICES"),
        Opt(("--retry",), "retry", "N", "if it fails, start it again, up to N more times"),
        Opt(
            ("--retry-mem",),
            "retry_mem",
            "FACTOR",
            "after an out-of-memory end, retry with MEM times FACTOR, e.g. 2 (needs --retry)",
        ),
        Opt(
            ("-n", "--name"), "name", "NAME", "a name for the job (default: the script's file name)"
        ),
        Opt(
            ("--after", "--depends"),
            "after",
            "IDS",
            "start only after these jobs succeed: 3, 3:4, 3,4, 10-19, '3 4' (repeatable); ''"
            " for none",
            repeat=True,
        ),
        Opt(
            ("--afterany",),
            "afterany",
            "IDS",
            "start only after these jobs have ended, however (repeatable)",
            repeat=True,
        ),
        Opt(
            ("--afternotok",),
            "afternotok",
            "IDS",
            "start only if these jobs end other than in success: failed, killed, aborted or"
            " could not start (repeatable)",
            repeat=True,
        ),
        Opt(
            ("-d", "--dependency"),
            "dependency",
            "SPEC",
            "Slurm's form: afterok:3:4,afterany:5,afternotok:6,after:7 (after: has started);"
            " all must hold; bare ids mean --after (repeatable)",
            repeat=True,
        ),
        Opt(
            ("-a", "--array"),
            "array",
            "SPEC",
            "a job array, one job per index: 1-100, 0-30:3, 1,5,7; %N after it: at most N"
            " running at once (1-100%4); prints the ids, e.g. 10-109",
        ),
        Opt(
            ("--each-line",),
            "each_line",
            "FILE",
            "an array of one job per line of FILE (- for stdin; empty lines skipped), the"
            " line in $SJQ_ENTRY; a {} in the command after -- stands for it",
        ),
        Opt(("-H", "--hold"), "hold", "", "queue it held; it runs after `sjq release ID`"),
        Opt(
            ("-o", "--stdout"),
            "stdout",
            "FILE",
            "the job's stdout, a pattern such as logs/%x.%j.out (default: sjq.defaults.stdout,"
            " which is ID.stdout)",
        ),
        Opt(
            ("-e", "--stderr"),
            "stderr",
            "FILE",
            "the job's stderr, likewise (default: sjq.defaults.stderr, which is ID.stderr)",
        ),
        Opt(("-C", "--cwd"), "cwd", "DIR", "the job's working directory (default: this one)"),
        Opt(
            ("--env",),
            "env",
            "NAME=VALUE",
            "set a variable in the job's environment (repeatable)",
            repeat=True,
        ),
        Opt(
            ("--export",),
            "export",
            "ALL|NONE|NAMES",
            "what of this environment the job gets: ALL (default), NONE, or names: PATH,HOME",
        ),
        Opt(
            ("-t", "--time"), "time", "LIMIT", "kill the job after this long: 90s, 30m, 2h, 1:30:00"
        ),
        Opt(
            ("--priority",), "priority", "N", "higher starts first among jobs that fit (default 0)"
        ),
        Opt(("-w", "--wait"), "wait", "", "wait for the job to end; exit with its outcome (below)"),
    ),
    notes=(
        "#SJQ directives: lines such as `#SJQ --mem 4G --procs 2` at the top of a script (after\n"
        "the #! line, before the first line that is not a comment) set options for it; options on\n"
        "the command line override them, and --env adds to theirs.\n"
        "\n"
        "environment: with --export ALL the job starts with this shell's environment (as sbatch\n"
        "does), except variables the protocol cannot carry (names such as BASH_FUNC_f%%, values\n"
        "with a line break). NONE: the daemon's minimal PATH, HOME, USER, SHELL and LANG, unless\n"
        "--env is given, in which case the job gets exactly the --env variables. Every job also\n"
        "gets SJQ_JOBID, SJQ_PROCS, SJQ_MEM, SJQ_SOCKET and a private TMPDIR; an array's\n"
        "elements also SJQ_ARRAY_ID (the first id), SJQ_ARRAY_INDEX and, with --each-line,\n"
        "SJQ_ENTRY (the line). The script is stored once for the whole array. Where the daemon\n"
        "pins jobs (sjq.pin), SJQ_CPUS lists the job's own CPUs (0,2-3) and OMP_NUM_THREADS,\n"
        "MKL_NUM_THREADS and OPENBLAS_NUM_THREADS are --procs unless the job sets them; where\n"
        "it manages GPUs, CUDA_VISIBLE_DEVICES and SJQ_GPUS name the job's (none without --gpus).\n"
        "\n"
        "memory: a job that uses more than its --mem is stopped and ends in F with reason\n"
        "'out of memory (limit 2G, peak 2.3G)' (sjq.enforce; `sjq info ID` shows a job's peak).\n"
        "With --retry 2 --retry-mem 2 it is started again, up to twice, with double the memory\n"
        "after each such end (at most sjq.maxmem).\n"
        "\n"
        "output files: --stdout/--stderr are relative to the job's working directory, and are\n"
        "patterns as in sbatch -o: %j the job id, %x its name, %u the user, %N the host, %A and\n"
        "%a the array's first id and the index (a job outside an array: its own id and 0), %4j\n"
        "the id padded to 4 digits, %% a literal %. Missing directories below the working\n"
        "directory are created as the job starts; a file elsewhere needs its directory to exist.\n"
        "\n"
        "with --wait the exit status is the job's: 0 if it succeeded, its exit status if it\n"
        "failed with one, 128+N if it died of signal N; 1 if it was aborted, could not start or\n"
        "was killed by sjq without a signal; and 1 for sjq's own errors, 2 for usage errors.\n"
        "With --array or --each-line: 0 if every element succeeded, else 1."
    ),
    examples=(
        "  sjq submit job.sh                         queue a script, print its id\n"
        "  sjq submit job.sh --mem 2G --procs 4      reserve 4 CPUs and 2 GiB\n"
        "  id=$(sjq submit prepare.sh)\n"
        "  sjq submit --after $id analyse.sh         run when job $id has succeeded\n"
        "  sjq submit --afterany $id cleanup.sh      run when job $id has ended, however\n"
        "  sjq submit -d afterok:3:4,afternotok:5 -- ./report\n"
        "  sjq submit -n sort -- sort -o 'out file.txt' in.txt\n"
        "  sjq submit -n align -o 'logs/%x.%j.out' align.sh   output in logs/align.17.out\n"
        "  printf '#!/bin/sh\\nmake -j4\\n' | sjq submit -p 4 -\n"
        "  sjq submit --wait -- make test && echo passed\n"
        "  sjq submit --export NONE --env OMP_NUM_THREADS=4 job.sh\n"
        "  sjq submit --array 1-100%10 sweep.sh      100 jobs, 10 at a time; prints e.g. 10-109\n"
        "  ls *.fq | sjq submit --each-line - -- gzip {}\n"
    ),
)


def run_submit(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed = parse(cmd, argv)
    ctx = ctx.with_options(parsed.values)
    each = parsed.values.get("each_line")
    if each == "-" and parsed.args == ["-"]:
        raise UsageError("the script and --each-line cannot both be read from standard input")
    script, default_name = _script(parsed, entry=isinstance(each, str))
    values = dict(parsed.values)
    if parsed.rest is None:
        found = directives(script, cmd, default_name or "standard input")
        for dest, value in found.items():
            if dest == "env" and isinstance(value, list):
                given = values.get("env")
                values["env"] = [*value, *(given if isinstance(given, list) else [])]
            else:
                values.setdefault(dest, value)
    options = _options(values)
    if "retry_mem" in options and "retry" not in options:
        raise UsageError("--retry-mem needs --retry N: it sets the memory of the retries")
    if "array" in options or "entries" in options:
        return _submit_array(ctx, script, {"name": default_name, **options}, values)
    with ctx.client() as client:
        try:
            # The CLI always asks for patterns: -o logs/%x.%j.out means what it does in sbatch.
            job = client.submit(script, **{"name": default_name, "patterns": True, **options})
        except RequestRejected as e:
            print(f"sjq: the daemon refused the job: {e.message}", file=sys.stderr)
            return EXIT_ERROR
        _started(client)
        print(job.id, flush=True)
        if not values.get("wait"):
            return EXIT_OK
        job.wait()
        info = job.info()
    from sjq.protocol import JobState  # noqa: PLC0415 - loaded only with --wait

    if info.state is JobState.SUCCESS:
        return EXIT_OK
    why = f": {info.reason}" if info.reason else ""
    print(f"sjq: job {info.id} {info.state.word}{why}", file=sys.stderr)
    return outcome_status(info.exit_code, info.signal)


def _started(client: Client) -> None:
    if client.started_pid is not None:
        print(
            f"sjq: started a daemon (pid {client.started_pid}) on {client.socket}",
            file=sys.stderr,
        )


def _submit_array(
    ctx: Context, script: bytes, options: dict[str, Any], values: Mapping[str, object]
) -> int:
    """--array / --each-line: print FIRST-LAST; with --wait, exit 0 only if all succeeded."""
    with ctx.client() as client:
        try:
            jobs = client.submit_array(script, **options)
        except RequestRejected as e:
            print(f"sjq: the daemon refused the array: {e.message}", file=sys.stderr)
            return EXIT_ERROR
        _started(client)
        print(jobs, flush=True)
        if not values.get("wait"):
            return EXIT_OK
        states = jobs.wait()
        failed = [i for i, state in states.items() if state.value != "S"]
        infos = client.status(failed) if failed else []
    for info in infos:
        why = f": {info.reason}" if info.reason else ""
        print(f"sjq: job {info.id} {info.state.word}{why}", file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK


def outcome_status(exit_code: int | None, signal: int | None) -> int:
    """The exit status `submit --wait` mirrors for a job that did not succeed."""
    if exit_code:
        return min(exit_code, 255)
    if signal:
        return min(128 + signal, 255)  # as a shell reports a command killed by a signal
    return EXIT_ERROR


def _script(parsed: Parsed, *, entry: bool = False) -> tuple[bytes, str | None]:
    """The script's bytes and the job name it suggests (``entry``: a {} in a command stands
    for $SJQ_ENTRY)."""
    if parsed.rest is not None:
        if parsed.args:
            raise UsageError(f"give a SCRIPT or -- COMMAND, not both (got {parsed.args[0]!r})")
        if not parsed.rest:
            raise UsageError("-- must be followed by a command, e.g. sjq submit -- sleep 10")
        return wrap_command(parsed.rest, entry=entry), os.path.basename(parsed.rest[0])
    if not parsed.args:
        raise UsageError("give a script file, - for standard input, or -- COMMAND [ARGS...]")
    path, *extra = parsed.args
    if extra:
        raise UsageError(
            f"a script takes no arguments here (got {extra[0]!r}); to pass arguments, submit a"
            f" command: sjq submit -- {path} {' '.join(extra)}"
        )
    try:
        if path == "-":
            script, shown, name = sys.stdin.buffer.read(), "standard input", None
        else:
            with open(path, "rb") as f:
                script = f.read()
            shown, name = path, os.path.basename(path)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from None
    if script.lstrip()[:2] != b"#!":
        raise UsageError(
            f"{shown} does not start with #!, so the daemon would not know how to run it; add a"
            " first line such as #!/bin/sh (or submit a command: sjq submit -- CMD ARGS)"
        )
    return script, name


def directives(script: bytes, cmd: Command, shown: str) -> dict[str, str | bool | list[str]]:
    """The options set by ``#SJQ`` lines at the top of ``script`` (later lines win)."""
    values: dict[str, str | bool | list[str]] = {}
    lines = script.split(b"\n")
    start = 1 if lines and lines[0].lstrip().startswith(b"#!") else 0
    for number, raw in enumerate(lines[start:], start + 1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith(b"#"):
            break  # the first command: directives below it are ordinary comments
        text = line.decode(errors="surrogateescape")
        word, *more = text.split(None, 1)
        if word != DIRECTIVE:
            continue
        rest = more[0] if more else ""
        where = f"{shown}, line {number}"
        try:
            import shlex  # noqa: PLC0415 - only scripts with #SJQ lines pay for it

            parsed = parse(cmd, shlex.split(rest))
        except ValueError as e:  # shlex: no closing quotation
            raise UsageError(f"{where}: cannot read {text!r}: {e}") from None
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
        except HelpRequested:
            raise UsageError(f"{where}: -h/--help is not a directive") from None
        bad = _NOT_IN_SCRIPTS.intersection(parsed.values)
        if bad:
            raise UsageError(
                f"{where}: --{sorted(bad)[0]} belongs on the command line, not in a script"
            )
        if parsed.args or parsed.rest is not None:
            extra = (parsed.args or parsed.rest or ["--"])[0]
            raise UsageError(f"{where}: directives take options only, got {extra!r}")
        try:
            _options(parsed.values)  # a bad value is reported with its line, not after merging
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
        for dest, value in parsed.values.items():
            if isinstance(value, list):
                earlier = values.get(dest)
                values[dest] = [*(earlier if isinstance(earlier, list) else []), *value]
            else:
                values[dest] = value
    return values
