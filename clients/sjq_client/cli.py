"""The `sjq` command: dispatch and the small commands, the only printer; imports nothing heavy.

Start-up cost matters (pipelines run `sjq submit` thousands of times), so this module imports
only the stdlib core and sjq_client._args; each command imports what it needs when it runs.
Never imports asyncio, psutil, sqlite3 or the daemon's modules (`sjq server` loads sjq.daemon
only when it is the command).
"""

from __future__ import annotations

import os
import sys

from ._args import Command, HelpRequested, Opt, Parsed, UsageError, help_text, parse

TYPE_CHECKING = False  # not typing's: importing typing would double `sjq --version`'s cost
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sjq.protocol import JobState

    from ._client import Client

# The imports inside functions below are deliberate (ruff PLC0415): each command loads what
# it needs, so that `sjq --version` and `sjq submit` pay for nothing else.

__all__ = ["Context", "kill_main", "main"]

EXIT_OK = 0
EXIT_ERROR = 1  # no daemon, the daemon refused, a job did not succeed
EXIT_USAGE = 2  # bad options or input: nothing was sent
EXIT_TIMEOUT = 124  # `sjq wait --timeout` ran out, as timeout(1)
MAX_RANGE = 1_000_000  # ids in one `A-B` range: a typo like 1-99999999999 must not eat memory


class Context:
    """What every command needs: where the daemon is, from the global or command options."""

    __slots__ = ("config", "socket")

    def __init__(self, config: str | None, socket: str | None) -> None:
        self.config = config
        self.socket = socket

    def with_options(self, values: dict[str, str | bool | list[str]]) -> Context:
        config, socket = values.get("config"), values.get("socket")
        return Context(
            config if isinstance(config, str) else self.config,
            socket if isinstance(socket, str) else self.socket,
        )

    def client(self) -> Client:
        """A Client with the Client's auto-start rule: submit and the commands about named
        jobs start a daemon when none answers; ping, shutdown and `status` of all never do."""
        from ._client import Client  # noqa: PLC0415

        return Client(self.socket, config=self.config)


# -- top level ---------------------------------------------------------------------------------

TOP = Command(
    name="",
    usage="[-c FILE] [-S PATH] COMMAND [ARGS...]",
    summary=(
        "sjq, the Simple Job Queue: run batch jobs on this machine, as many at a time as its\n"
        "CPUs and memory allow, in order, with dependencies.\n"
        "\n"
        "commands:\n"
        "  submit     queue a script or a command; prints its id (starts a daemon if none runs)\n"
        "  status     list jobs, with a one-line queue summary\n"
        "  state      print running, success or failed for jobs (for workflow templates)\n"
        "  info       everything about jobs: exit code, reason, CPU time, peak memory\n"
        "  wait       block until jobs end; exit 0 only if all succeeded\n"
        "  stats      per job name: failures, wall and CPU time, peak memory; what to reserve\n"
        "  kill       kill jobs (running ones get SIGTERM, then SIGKILL)\n"
        "  hold       keep queued jobs from starting\n"
        "  release    let held jobs run\n"
        "  pause      start no more jobs (running ones carry on) until `sjq resume`\n"
        "  resume     start jobs again after `sjq pause`\n"
        "  ping       check that the daemon answers; job counts\n"
        "  shutdown   stop the daemon (running jobs are killed, queued ones kept)\n"
        "  server     run the daemon yourself: sjq server -f (foreground) or -d (detached)\n"
        "\n"
        "`sjq COMMAND --help` shows a command's options and examples. `sjq --version` the version."
    ),
    options=(),
    notes=(
        "the daemon: submit, pause, resume and every command about named jobs (status ID,\n"
        "state, info, wait, kill, hold, release) start one when none runs; an idle daemon stops\n"
        "after sjq.waittime, and the next start answers for every job in its database. ping,\n"
        "stats, shutdown and a bare `sjq status` never start one.\n"
        "exit status: 0 success; 1 an error (no daemon, the daemon refused, a job did not\n"
        "succeed); 2 a usage error (bad options or input; nothing was done).\n"
        "environment: SJQ_CONFIG names the config file; SJQ_SOCKET and the other SJQ_* variables\n"
        "override its settings (see sjqrc.example)."
    ),
    examples=(
        "  id=$(sjq submit job.sh --mem 2G --procs 4)   queue a script, keep its id\n"
        "  sjq submit --after $id -- sort -o out.txt in.txt\n"
        "  sjq status                                   what runs and waits\n"
        "  sjq wait $id && echo ok                       block until it ends\n"
        "  sjq info $id                                 why it failed, how much memory it took\n"
    ),
)

# name -> (module, help object name, run function name)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "submit": ("_cli_submit", "SUBMIT", "run_submit"),
    "status": ("_cli_show", "STATUS", "run_status"),
    "state": ("cli", "STATE", "run_state"),
    "info": ("_cli_show", "INFO", "run_info"),
    "wait": ("_cli_show", "WAIT", "run_wait"),
    "stats": ("_cli_stats", "STATS", "run_stats"),
    "kill": ("cli", "KILL", "run_kill"),
    "hold": ("cli", "HOLD", "run_hold"),
    "release": ("cli", "RELEASE", "run_release"),
    "pause": ("cli", "PAUSE", "run_pause"),
    "resume": ("cli", "RESUME", "run_resume"),
    "ping": ("cli", "PING", "run_ping"),
    "shutdown": ("cli", "SHUTDOWN", "run_shutdown"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `sjq` command line; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `sjq status | head`: the reader went away; that is not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR


def kill_main(argv: Sequence[str] | None = None) -> int:
    """The `sjq-kill` program: `sjq kill ID...` as one executable, for callers that run a
    command without a shell (Snakemake's --cluster-generic-cancel-cmd)."""
    args = list(sys.argv[1:] if argv is None else argv)
    return main(["kill", *args])


def _main(args: list[str]) -> int:
    ctx = Context(None, None)
    try:
        # Options before the command word: --version, --help, -c/--config, -S/--socket.
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "-":
            word = args[i]
            if word == "--version":
                from sjq import __version__  # noqa: PLC0415 -- sjq/__init__ holds just that

                print(f"sjq {__version__}")
                return EXIT_OK
            if word in ("-h", "--help"):
                raise HelpRequested
            if word.startswith("--"):
                flag, eq, value = word.partition("=")
                inline = bool(eq)
            else:
                flag, value = word[:2], word[2:]
                inline = bool(value)
            dest = {"-c": "config", "--config": "config", "-S": "socket", "--socket": "socket"}
            if flag not in dest:
                raise UsageError(f"unknown option {flag} (command options go after the command)")
            if not inline:
                if i + 1 >= len(args):
                    raise UsageError(f"{flag} needs a value")
                value = args[i + 1]
                i += 1
            i += 1
            ctx = ctx.with_options({dest[flag]: value})
        if i >= len(args):
            raise UsageError(
                "give a command: submit, status, state, info, wait, stats, kill, hold, release,"
                " pause, resume, ping, shutdown or server"
            )
        name, rest = args[i], args[i + 1 :]
    except HelpRequested:
        sys.stdout.write(help_text(TOP))
        return EXIT_OK
    except UsageError as e:
        return _usage(str(e), "sjq --help")
    if name == "server":
        return _server(ctx, rest)
    if name == "help":
        return _help(rest)
    if name not in _COMMANDS:
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(name, [*_COMMANDS, "server"], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        return _usage(f"unknown command {name!r}{hint}", "sjq --help")
    cmd, run = _command(name)
    try:
        return run(cmd, rest, ctx)
    except HelpRequested:
        sys.stdout.write(help_text(cmd))
        return EXIT_OK
    except UsageError as e:
        return _usage(f"{name}: {e}", f"sjq {name} --help")
    except Exception as e:
        return _report(e)


def _command(name: str) -> tuple[Command, Callable[[Command, list[str], Context], int]]:
    module_name, help_name, run_name = _COMMANDS[name]
    if module_name == "cli":
        module = sys.modules[__name__]
    else:
        import importlib  # noqa: PLC0415

        module = importlib.import_module(f"sjq_client.{module_name}")
    cmd: Command = getattr(module, help_name)
    run: Callable[[Command, list[str], Context], int] = getattr(module, run_name)
    return cmd, run


def _usage(message: str, see: str) -> int:
    print(f"sjq: {message}\n(see `{see}`)", file=sys.stderr)
    return EXIT_USAGE


def _report(e: Exception) -> int:
    """An error while a command ran: one line (or a few) of advice on stderr, exit 1 or 2."""
    from sjq.config import ConfigError  # noqa: PLC0415

    from ._exceptions import SjqError  # noqa: PLC0415

    if isinstance(e, ConfigError):
        print(f"sjq: {e}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(e, SjqError):
        print(f"sjq: {e}", file=sys.stderr)
        return EXIT_ERROR
    raise e


def _help(rest: list[str]) -> int:
    if not rest:
        sys.stdout.write(help_text(TOP))
        return EXIT_OK
    if rest[0] == "server":
        return _server(Context(None, None), ["--help"])
    if rest[0] not in _COMMANDS:
        return _usage(f"no command {rest[0]!r}", "sjq --help")
    sys.stdout.write(help_text(_command(rest[0])[0]))
    return EXIT_OK


def _server(ctx: Context, rest: list[str]) -> int:
    """`sjq server ...` is `python -m sjq.daemon ...`: the daemon's own option parser."""
    from sjq.daemon import main as daemon_main  # noqa: PLC0415 -- only for this command

    extra = []
    if ctx.config is not None:
        extra += ["-c", ctx.config]
    if ctx.socket is not None:
        extra += ["--set", f"sjq.socket={os.path.abspath(ctx.socket)}"]
    return daemon_main([*extra, *rest], prog="sjq server")


# -- helpers shared by the commands ----------------------------------------------------------


def parse_args(cmd: Command, argv: Sequence[str], ctx: Context) -> tuple[Parsed, Context]:
    parsed = parse(cmd, argv)
    return parsed, ctx.with_options(parsed.values)


def job_ids(words: Sequence[str], *, required: bool = True) -> list[int]:
    """Ids from ``3 4``, ``3:4:5``, ``3,4`` and ranges ``3-7``, in the order given, no repeats.

    Spaces, commas and colons all separate ids, inside a word too: workflow templates pass
    ``--after '3 4'`` (Snakemake's ``{dependencies}``), and ``--after ''`` for no job at all.
    """
    out: dict[int, None] = {}
    for word in words:
        for piece in word.replace(",", " ").replace(":", " ").split():
            first, dash, last = piece.partition("-")
            if not (_is_id(first) and (not dash or _is_id(last))):
                raise UsageError(f"not a job id: {piece!r} (ids look like 3, 3:4:5 or 3-7)")
            low, high = int(first), int(last) if dash else int(first)
            if high < low or high - low >= MAX_RANGE:
                raise UsageError(f"bad id range {piece!r} (from low to high, at most {MAX_RANGE})")
            for jobid in range(low, high + 1):
                out[jobid] = None
    if required and not out:
        raise UsageError("give at least one job id")
    return list(out)


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) > 0


def no_args(parsed: Parsed) -> None:
    if parsed.args or parsed.rest:
        raise UsageError(f"unexpected argument {(parsed.args or parsed.rest or [''])[0]!r}")


# -- state, kill, hold, release, ping, shutdown ----------------------------------------------

STATE = Command(
    "state",
    "[options] ID...",
    "Print running, success or failed for each job, one word a line in the order given: the\n"
    "status command of generic workflow templates (Snakemake's cluster-generic executor,\n"
    "Makefiles, Nextflow-style shims), which know only these three words. A job that has\n"
    "not ended is running (queued, waiting and held jobs too: the workflow waits for them);\n"
    "one that ended in S is success; every other end (failed, aborted, killed, error) is\n"
    "failed. Starts a daemon when none runs, as the other commands about named jobs do.",
    (),
    "  sjq state 12\n"
    "  snakemake --executor cluster-generic --cluster-generic-status-cmd 'sjq state' ...\n"
    '  until [ "$(sjq state $id)" != running ]; do sleep 10; done\n',
    notes=(
        "exit status: 0 with one word for every id; 1, with nothing printed, if an id is\n"
        "unknown (never submitted, or forgotten after sjq.keep) or the daemon cannot be\n"
        "reached; 2 for a usage error. `sjq status ID` and `sjq info ID` show the state itself."
    ),
)

KILL = Command(
    "kill",
    "[options] ID...",
    "Kill jobs. A running job's whole process group gets SIGTERM, then SIGKILL after\n"
    "sjq.killgrace seconds; a queued or held job ends at once. They end in K (killed), and\n"
    "jobs that depend on them in A (aborted). Ids that are unknown or already ended are\n"
    "ignored. Ids: 3 4, 3:4:5, 3,4 or ranges 3-7.",
    (),
    "  sjq kill 12\n  sjq kill 12-20 31\n  sjq kill $(sjq status --state Q --json | jq '.[].id')\n",
)
HOLD = Command(
    "hold",
    "[options] ID...",
    "Keep queued or waiting jobs from starting: they become held (U) until `sjq release`.\n"
    "Running and ended jobs are left as they are. A held job does not keep an auto-started\n"
    "daemon alive; it waits in the daemon's database for the next start.",
    (),
    "  sjq hold 12\n  sjq hold 12-20\n",
)
RELEASE = Command(
    "release",
    "[options] ID...",
    "Let held (U) jobs run: each becomes queued, or waiting if its dependencies have not\n"
    "all succeeded yet. Other jobs are left as they are.",
    (),
    "  id=$(sjq submit --hold job.sh); sjq release $id\n  sjq release 12-20\n",
)
PAUSE = Command(
    "pause",
    "[options]",
    "Pause the queue: no job starts until `sjq resume`. Running jobs carry on; new jobs are\n"
    "queued as usual. `sjq status` and `sjq ping` say the queue is paused. The pause is kept\n"
    "in the daemon's database, so it holds across a restart (a paused daemon with nothing\n"
    "running goes away when idle, as with held jobs). Starts a daemon if none runs.",
    (),
    "  sjq pause                      # e.g. before a maintenance window\n"
    "  sjq pause; sjq submit --array 1-500 job.sh; sjq resume\n",
)
RESUME = Command(
    "resume",
    "[options]",
    "Let jobs start again after `sjq pause`. Starts a daemon if none runs (it reads the\n"
    "pause from its database and lifts it).",
    (),
    "  sjq resume\n",
)
PING = Command(
    "ping",
    "[options]",
    "Check that the daemon answers, and show how many jobs it has in each state, and\n"
    "whether the queue is paused (`sjq pause`). Never starts a daemon: exit 1 if none is\n"
    "running.",
    (Opt(("--json",), "json", "", 'counts by state letter as JSON: {"R": 2, "Q": 5}'),),
    "  sjq ping\n  sjq ping >/dev/null 2>&1 || sjq server -d\n",
)
SHUTDOWN = Command(
    "shutdown",
    "[options]",
    "Stop the daemon and wait until it has gone. Running jobs are killed (they end in K);\n"
    "queued and held jobs stay in its database and run after the next start.",
    (
        Opt(
            ("--keep-running",),
            "keep_running",
            "",
            "leave running jobs running; the next daemon adopts them",
        ),
    ),
    "  sjq shutdown\n  sjq shutdown --keep-running   # e.g. before upgrading sjq\n",
)


def _each(action: str) -> Callable[[Command, list[str], Context], int]:
    def run(cmd: Command, argv: list[str], ctx: Context) -> int:
        parsed, ctx = parse_args(cmd, argv, ctx)
        if parsed.rest:
            raise UsageError(f"unexpected argument {parsed.rest[0]!r}")
        ids = job_ids(parsed.args)
        with ctx.client() as client:
            getattr(client, action)(ids)
        return EXIT_OK

    return run


def run_state(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    if parsed.rest:
        raise UsageError(f"unexpected argument {parsed.rest[0]!r}")
    ids = job_ids(parsed.args)
    with ctx.client() as client:
        outcomes = client.outcomes(ids)
    sys.stdout.write("".join(f"{outcomes[i]}\n" for i in ids))
    return EXIT_OK


run_kill = _each("kill")
run_hold = _each("hold")
run_release = _each("release")


def run_pause(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    no_args(parsed)
    with ctx.client() as client:
        client.pause()
    return EXIT_OK


def run_resume(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    no_args(parsed)
    with ctx.client() as client:
        client.resume()
    return EXIT_OK


def run_ping(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    no_args(parsed)
    with ctx.client() as client:
        counts = client.ping()
        if parsed.values.get("json"):
            import json  # noqa: PLC0415

            print(json.dumps({s.value: n for s, n in sorted(counts.items())}))
        else:
            print(f"sjq daemon on {client.socket}: {summary(counts)}{paused_note(client)}")
    return EXIT_OK


def paused_note(client: Client) -> str:
    """``; paused since 10:32:10 (`sjq resume` ...)`` when the queue is paused, else empty.
    A daemon older than PAUSE answers QUEUE with an error: it cannot be paused."""
    from ._exceptions import RequestRejected  # noqa: PLC0415

    try:
        state = client.queue_state()
    except RequestRejected:
        return ""
    if not state.paused:
        return ""
    import time  # noqa: PLC0415

    since = state.paused_since
    when = ""
    if since is not None:
        today = time.localtime()[:3] == time.localtime(since)[:3]
        when = " since " + time.strftime(
            "%H:%M:%S" if today else "%Y-%m-%d %H:%M", time.localtime(since)
        )
    return f"; paused{when}: no job starts until `sjq resume`"


def run_shutdown(cmd: Command, argv: list[str], ctx: Context) -> int:
    parsed, ctx = parse_args(cmd, argv, ctx)
    no_args(parsed)
    with ctx.client() as client:
        client.shutdown(keep_running=bool(parsed.values.get("keep_running")))
    return EXIT_OK


def summary(counts: Mapping[JobState, int]) -> str:
    """``3 running, 10 queued, 2 held, 120 done, 1 failed`` (states in a fixed order)."""
    order = "RQHUSFAKE"
    ranked = sorted(counts, key=lambda s: order.index(s.value))
    return ", ".join(f"{counts[s]} {s.word}" for s in ranked if counts[s]) or "no jobs"
