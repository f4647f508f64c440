"""`sjq submit` (directives, wrapping, --export, --wait); no asyncio, psutil, sqlite3, daemon.

The hot path of the CLI: imports sjq.units, sjq.config and sjq.protocol (through the client)
and nothing else of sjq; never asyncio, psutil, sqlite3 or the daemon's modules.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sjq.protocol._syntax import MAX_RETRY_MEM
from sjq.units import UnitError, parse_duration, parse_mem

from ._args import Command, HelpRequested, Opt, Parsed, UsageError, parse
from ._exceptions import RequestRejected
from ._script import exportable, wrap_command
from .cli import EXIT_ERROR, EXIT_OK, Context, job_ids

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


def _text(values: Mapping[str, object], dest: str) -> str | None:
    value = values.get(dest)
    return value if isinstance(value, str) else None


def _mem(value: str) -> int:
    try:
        return parse_mem(value)
    except UnitError as e:
        raise UsageError(f"--mem: {e}") from None


def _procs(value: str) -> int:
    if not (value.isascii() and value.isdigit() and int(value) >= 1):
        raise UsageError(f"--procs must be a whole number from 1, got {value!r}")
    return int(value)


def _gpus(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise UsageError(f"--gpus must be a whole number from 0, got {value!r}")
    return int(value)


def _retry(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise UsageError(f"--retry must be a whole number from 0, got {value!r}")
    return int(value)


def _retry_mem(value: str) -> float:
    plain = value.isascii() and value.replace(".", "", 1).isdigit()
    factor = float(value) if plain else 0.0
    if not 1 <= factor <= MAX_RETRY_MEM:
        raise UsageError(
            f"--retry-mem must be a number from 1 to {MAX_RETRY_MEM:g}, e.g. 2, got {value!r}"
        )
    return factor


def _time(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except UnitError as e:
        raise UsageError(f"--time: {e}") from None
    if not 0 < seconds < float("inf"):
        raise UsageError(f"--time must be more than zero, got {value!r}")
    return seconds


def _priority(value: str) -> int:
    digits = value[1:] if value[:1] in "+-" else value
    if not (digits.isascii() and digits.isdigit()):
        raise UsageError(f"--priority must be a whole number, e.g. 10 or -5, got {value!r}")
    return int(value)


def _one_line(option: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not value:
            raise UsageError(f"--{option} must not be empty")
        if "\n" in value or "\0" in value:
            raise UsageError(f"--{option} must not contain a line break or NUL")
        return value

    return check


def _cwd(value: str) -> str:
    path = os.path.abspath(_one_line("cwd")(value))
    if not os.path.isdir(path):
        raise UsageError(f"--cwd: {path} is not a directory")
    return path


# Option -> (Client.submit keyword, converter); the converters raise UsageError.
_CONVERT: dict[str, tuple[str, Callable[[str], Any]]] = {
    "mem": ("mem", _mem),
    "procs": ("procs", _procs),
    "gpus": ("gpus", _gpus),
    "retry": ("retry", _retry),
    "retry_mem": ("retry_mem", _retry_mem),
    "time": ("time_limit", _time),
    "priority": ("priority", _priority),
    "name": ("name", _one_line("name")),
    "stdout": ("stdout", _one_line("stdout")),
    "stderr": ("stderr", _one_line("stderr")),
    "cwd": ("cwd", _cwd),
}


def _options(values: Mapping[str, str | bool | list[str]]) -> dict[str, Any]:
    """Client.submit keyword arguments from the option values; UsageError for a bad one."""
    out: dict[str, Any] = {"cwd": os.getcwd(), "hold": bool(values.get("hold"))}
    for dest, (keyword, convert) in _CONVERT.items():
        if isinstance(value := values.get(dest), str):
            out[keyword] = convert(value)
    after = values.get("after")
    if isinstance(after, list):
        out["after"] = job_ids(after, required=False)
    for kind in ("afterany", "afternotok"):
        if isinstance(ids := values.get(kind), list):
            out[kind] = job_ids(ids, required=False)
    spec, each = values.get("array"), values.get("each_line")
    if isinstance(spec, str):
        indexes, limit = _array(spec)
        if indexes is not None and isinstance(each, str):
            raise UsageError("--each-line makes its own array: --array may only add %N to it")
        if indexes is None and not isinstance(each, str):
            raise UsageError(f"--array {spec}: a limit alone names no job; give indexes")
        out["array"], out["limit"] = indexes, limit
    if isinstance(each, str):
        out["entries"] = _lines(each)
    if isinstance(specs := values.get("dependency"), list):
        bare, dependency = _dependency(specs)
        out["after"] = [*out.get("after", []), *bare]
        if dependency:
            out["dependency"] = dependency
    env = values.get("env")
    out["env"] = _environment(_text(values, "export"), env if isinstance(env, list) else [])
    return out


def _array(spec: str) -> tuple[tuple[int, ...] | None, int | None]:
    """--array's indexes (None for a limit alone, %N) and limit."""
    from sjq.protocol._array import parse_array  # noqa: PLC0415 - arrays only

    parsed = parse_array(spec)
    if isinstance(parsed, str):
        raise UsageError(f"--array: {parsed}")
    return parsed


def _lines(path: str) -> list[str]:
    """--each-line: the lines of FILE (- for stdin), without line ends, empty ones skipped."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
        text = data.decode()
    except OSError as e:
        raise UsageError(f"--each-line: cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"--each-line: {path} is not UTF-8 text ({e.reason})") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    out = [line for line in lines if line]
    if any("\0" in line for line in out):
        raise UsageError(f"--each-line: {path} has a NUL byte in a line")
    if not out:
        raise UsageError(f"--each-line: {path} has no lines")
    return out


def _dependency(specs: Sequence[str]) -> tuple[list[int], str]:
    """-d values: ids alone (``3:4``, ``3,4``, ``3-7``) are --after, as -d always meant and
    STATUS's DEPS column shows; the rest, with Slurm's kinds, is DEPENDENCY, checked here."""
    bare: list[int] = []
    clauses: list[str] = []
    for spec in specs:
        text = spec.strip()
        if all(c.isdigit() or c in ":,- \t" for c in text):  # '' too: no dependency
            bare += job_ids([text], required=False)
            continue
        from sjq.protocol._dependency import parse_dependency  # noqa: PLC0415

        parsed = parse_dependency(text)
        if isinstance(parsed, str):
            raise UsageError(f"--dependency: {parsed}")
        clauses.append(text)
    return bare, ",".join(clauses)


def _environment(export: str | None, settings: Sequence[str]) -> Mapping[str, str] | str:
    """Client.submit's env argument for --export and --env."""
    extra: dict[str, str] = {}
    for item in settings:
        name, eq, value = item.partition("=")
        if not eq or not _env_name(name):
            raise UsageError(f"--env takes NAME=VALUE (NAME: letters, digits, _), got {item!r}")
        if "\n" in value:
            raise UsageError(f"--env {name}: a value cannot hold a line break")
        extra[name] = value
    mode = (export or "ALL").strip()
    if mode.upper() == "ALL":
        return {**dict(exportable(os.environ)), **extra}
    if mode.upper() == "NONE":
        return extra if extra else "daemon"
    names = [n.strip() for n in mode.split(",") if n.strip()]
    for name in names:
        if not _env_name(name):
            raise UsageError(
                f"--export takes ALL, NONE or variable names (PATH,HOME), got {name!r}"
            )
    chosen = {n: os.environ[n] for n in names if n in os.environ and "\n" not in os.environ[n]}
    return {**chosen, **extra}


def _env_name(name: str) -> bool:
    return (
        bool(name)
        and (name[0].isalpha() or name[0] == "_")
        and name.isascii()
        and (name.replace("_", "a").isalnum())
    )
