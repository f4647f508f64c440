"""Option parsing and --help text for `sjq`; imports nothing at run time, not even typing.

Why not argparse: importing it and building a parser costs several milliseconds on every
``sjq submit``, which pipelines run thousands of times; this covers what sjq needs (long and
short options, ``--opt=value``, ``-mVALUE``, repeats, options anywhere before ``--``) and
words its errors as advice. Plain classes rather than NamedTuples or dataclasses, and no
``typing`` import: `sjq --version` must cost no more than starting Python (typing alone
pulls in ``re`` and costs ~10 ms).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; mypy knows the name
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "COMMON",
    "Command",
    "HelpRequested",
    "Opt",
    "Parsed",
    "UsageError",
    "help_text",
    "parse",
]

Value = str | bool | list[str]


class Opt:
    """One option. ``metavar`` empty: a flag; otherwise it takes a value, named so in help."""

    __slots__ = ("dest", "flags", "help", "metavar", "repeat")

    def __init__(
        self,
        flags: tuple[str, ...],
        dest: str,
        metavar: str = "",
        help: str = "",
        repeat: bool = False,
    ) -> None:
        self.flags = flags
        self.dest = dest
        self.metavar = metavar
        self.help = help
        self.repeat = repeat


class Command:
    """A command's options and the text of its --help."""

    __slots__ = ("examples", "name", "notes", "options", "summary", "usage")

    def __init__(
        self,
        name: str,  # "submit"; "" for sjq itself
        usage: str,  # after the program name: "[options] SCRIPT|-"
        summary: str,
        options: tuple[Opt, ...],
        examples: str,
        *,
        notes: str = "",
    ) -> None:
        self.name = name
        self.usage = usage
        self.summary = summary
        self.options = options
        self.examples = examples
        self.notes = notes


COMMON = (
    Opt(("-c", "--config"), "config", "FILE", "config file (default: $SJQ_CONFIG, else ~/.sjqrc)"),
    Opt(("-S", "--socket"), "socket", "PATH", "the daemon's socket (default: sjq.socket)"),
)
_HELP = Opt(("-h", "--help"), "help", "", "show this help and exit")
HELP_WIDTH = 92  # columns of --help text: a terminal of 100 with room to spare


class UsageError(Exception):
    """The command line is wrong; the message says how. Exit status 2, nothing was done."""


class HelpRequested(Exception):
    """-h/--help was given."""


class Parsed:
    """What `parse` found: option values by dest, positional arguments, what follows ``--``."""

    __slots__ = ("args", "rest", "values")

    def __init__(self, values: dict[str, Value], args: list[str], rest: list[str] | None) -> None:
        self.values = values
        self.args = args
        self.rest = rest  # None without a `--`


def parse(cmd: Command, argv: Sequence[str], prog: str = "sjq") -> Parsed:
    """Options anywhere (up to ``--``), in ``--name value``, ``--name=value``, ``-n value`` or
    ``-nvalue`` form. A later value replaces an earlier one, except for ``repeat`` options."""
    table: dict[str, Opt] = {}
    for opt in (*cmd.options, *COMMON, _HELP):
        for flag in opt.flags:
            table[flag] = opt
    values: dict[str, Value] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            return Parsed(values, args, list(argv[i:]))
        if not word.startswith("-") or word == "-":
            args.append(word)
            continue
        if word.startswith("--"):
            name, eq, inline = word.partition("=")
            value: str | None = inline if eq else None
        else:  # -m2G or -m
            name, value = word[:2], (word[2:] or None)
        found = table.get(name)
        if found is None:
            raise UsageError(f"unknown option {name}{_suggest(name, table)}")
        if found is _HELP:
            raise HelpRequested
        if not found.metavar:
            if value is not None:
                raise UsageError(f"{name} takes no value")
            values[found.dest] = True
            continue
        if value is None:
            if i >= len(argv):
                raise UsageError(f"{name} needs a value ({found.metavar})")
            value = argv[i]
            i += 1
        if found.repeat:
            listed = values.setdefault(found.dest, [])
            assert isinstance(listed, list)
            listed.append(value)
        else:
            values[found.dest] = value
    return Parsed(values, args, None)


def _suggest(name: str, table: dict[str, Opt]) -> str:
    import difflib  # noqa: PLC0415 -- only on this error path: it costs start-up time

    close = difflib.get_close_matches(name, [f for f in table if f.startswith("--")], n=1)
    return f"; did you mean {close[0]}?" if close else ""


def help_text(cmd: Command, prog: str = "sjq") -> str:
    """Usage, summary, options (the command's, then the common ones), notes and examples."""
    import textwrap  # noqa: PLC0415 -- only for --help

    head = f"{prog} {cmd.name}".rstrip()
    lines = [f"usage: {head} {cmd.usage}".rstrip(), "", cmd.summary]
    sections = [("options", cmd.options), ("common options", (*COMMON, _HELP))]
    rows = {
        title: [(", ".join(o.flags) + (f" {o.metavar}" if o.metavar else ""), o.help) for o in opts]
        for title, opts in sections
    }
    width = min(28, max(len(left) for r in rows.values() for left, _ in r))
    for title, section in rows.items():
        if not section:
            continue
        lines += ["", f"{title}:"]
        for left, text in section:
            wrapped = textwrap.wrap(text, HELP_WIDTH - width - 4) or [""]
            if len(left) > width:
                lines.append(f"  {left}")
                lines += [f"  {'':{width}}  {w}" for w in wrapped]
            else:
                lines.append(f"  {left:{width}}  {wrapped[0]}")
                lines += [f"  {'':{width}}  {w}" for w in wrapped[1:]]
    if cmd.notes:
        lines += ["", cmd.notes.rstrip()]
    lines += ["", "examples:", cmd.examples.rstrip()]
    return "\n".join(lines) + "\n"
