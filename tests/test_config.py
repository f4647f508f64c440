"""sjq.config: real files under tmp_path and real environ dicts; no mocks."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sjq.config import (
    DEFAULT_PATH,
    KEYS,
    Config,
    ConfigError,
    config_path,
    load_config,
)
from sjq.config_keys import _cgroup_memory_limit
from sjq.units import parse_mem

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "sjqrc.example"
G = 1024**3


@pytest.fixture
def home(tmp_path: Path) -> Path:
    d = tmp_path / "home"
    d.mkdir()
    return d


def env_for(home: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(home), **extra}


def load_text(
    home: Path,
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Config:
    """Write ``text`` to ~/.sjqrc and load it the way the CLI does (no explicit path)."""
    (home / ".sjqrc").write_text(text, encoding="utf-8")
    return load_config(environ={**env_for(home), **(env or {})}, overrides=overrides)


def defaults(home: Path) -> Config:
    return load_config(os.devnull, environ=env_for(home))._replace(source=None)


def error_of(home: Path, text: str, **kw: Mapping[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_text(home, text, **kw)
    return str(info.value)


# --- the table ---------------------------------------------------------------------------------


def test_keys_and_config_fields_are_the_same_set() -> None:
    attrs = [k.attr for k in KEYS.values()]
    assert list(Config._fields) == [*attrs, "source"]
    assert all(name == key.name and name.startswith("sjq.") for name, key in KEYS.items())


def test_every_key_has_a_meaning_a_group_and_a_parsable_default(home: Path) -> None:
    groups = {"daemon", "scheduling", "resources", "output", "limits", "storage", "slurm"}
    for key in KEYS.values():
        assert key.meaning
        assert key.group in groups
    # Every default is user syntax: writing all of them into a file changes nothing.
    text = "".join(f"{k.name} = {k.default}\n" for k in KEYS.values())
    assert load_text(home, text)._replace(source=None) == defaults(home)


@pytest.mark.parametrize(
    ("key", "env"),
    [
        ("sjq.maxprocs", "SJQ_MAXPROCS"),
        ("sjq.defaults.mem", "SJQ_DEFAULTS_MEM"),
        ("sjq.keep.count", "SJQ_KEEP_COUNT"),
        ("sjq.socket", "SJQ_SOCKET"),
    ],
)
def test_environment_names(key: str, env: str) -> None:
    assert KEYS[key].env == env


def test_environment_names_are_unique_and_not_sjq_config() -> None:
    names = [k.env for k in KEYS.values()]
    assert len(set(names)) == len(names)
    assert "SJQ_CONFIG" not in names


# --- defaults ----------------------------------------------------------------------------------


def test_defaults_without_a_file(home: Path, tmp_path: Path) -> None:
    cfg = load_config(environ=env_for(home, TMPDIR=str(tmp_path)))
    h = str(home)
    assert cfg.source is None
    assert cfg.socket == f"{h}/.sjq.sock"
    assert cfg.logfile == f"{h}/.sjq.log"
    assert cfg.daemon is False
    assert cfg.pidfile == f"{h}/.sjq.pid"
    assert cfg.autoshutdown is True
    assert cfg.schedtime == 60.0
    assert cfg.waittime == 60.0
    assert cfg.maxprocs == len(os.sched_getaffinity(0))
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert cfg.maxmem is not None
    assert 0 < cfg.maxmem <= physical
    assert cfg.default_procs == 1
    assert cfg.default_mem == min(2 * G, cfg.maxmem)
    assert cfg.default_stdout == "%j.stdout"
    assert cfg.default_stderr == "%j.stderr"
    assert cfg.db == f"{h}/.sjq.db"
    assert cfg.spool == f"{h}/.sjq.spool"
    assert cfg.tmpdir == str(tmp_path)
    assert cfg.killgrace == 5.0
    assert cfg.maxsrc == 16 * 1024**2
    assert cfg.maxline == 64 * 1024
    assert cfg.conntimeout == 30.0
    assert cfg.maxconns == 1024
    assert cfg.keep == 7 * 86400.0
    assert cfg.keepcount is None
    assert cfg.sync == "normal"
    assert cfg.loglevel == "info"


def test_tmpdir_skips_an_unusable_tmpdir_variable(home: Path, tmp_path: Path) -> None:
    cfg = load_config(environ=env_for(home, TMPDIR=str(tmp_path / "missing"), TMP=str(tmp_path)))
    assert cfg.tmpdir == str(tmp_path)
    cfg = load_config(environ=env_for(home, TMPDIR=str(tmp_path / "missing")))
    assert cfg.tmpdir in {"/tmp", "/var/tmp", "/usr/tmp"}


def _tree(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_cgroup_v2_limit_of_an_ancestor_counts(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "proc/self/cgroup": "0::/box/job\n",
            "sys/fs/cgroup/box/job/memory.max": "max\n",
            "sys/fs/cgroup/box/memory.max": "1073741824\n",
        },
    )
    assert _cgroup_memory_limit(str(tmp_path)) == G


def test_cgroup_v1_limit_seen_from_inside_a_container(tmp_path: Path) -> None:
    # Without a cgroup namespace the host's path is not mounted: the walk up finds the root.
    _tree(
        tmp_path,
        {
            "proc/self/cgroup": "5:cpu:/\n4:memory,hugetlb:/docker/abc\n0::/\n",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n",
        },
    )
    assert _cgroup_memory_limit(str(tmp_path)) == 512 * 1024**2


def test_no_cgroup_information_means_no_limit(tmp_path: Path) -> None:
    assert _cgroup_memory_limit(str(tmp_path)) is None
    _tree(tmp_path, {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "max\n"})
    assert _cgroup_memory_limit(str(tmp_path)) is None


def test_config_is_frozen(home: Path) -> None:
    cfg = load_config(environ=env_for(home))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.maxprocs = 3  # type: ignore[misc]


# --- every key's values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "attr", "expected"),
    [
        ("sjq.socket = /run/x.sock", "socket", "/run/x.sock"),
        ("sjq.logfile = /var/log/sjq.log", "logfile", "/var/log/sjq.log"),
        ("sjq.logfile = none", "logfile", None),
        ("sjq.logfile = NONE", "logfile", None),
        ("sjq.daemon = T", "daemon", True),
        ("sjq.pidfile = /run/sjq.pid", "pidfile", "/run/sjq.pid"),
        ("sjq.autoshutdown = no", "autoshutdown", False),
        ("sjq.schedtime = 5m", "schedtime", 300.0),
        ("sjq.schedtime = 0.5", "schedtime", 0.5),
        ("sjq.waittime = 0", "waittime", 0.0),
        ("sjq.waittime = 1:30", "waittime", 90.0),
        ("sjq.maxprocs = 3", "maxprocs", 3),
        ("sjq.maxprocs = 100000", "maxprocs", 100000),
        ("sjq.maxmem = 8G", "maxmem", 8 * G),
        ("sjq.maxmem = 1.5G", "maxmem", 3 * G // 2),
        ("sjq.maxmem = 512M", "maxmem", 512 * 1024**2),
        ("sjq.maxmem = 4096", "maxmem", 4096),
        ("sjq.maxmem = none", "maxmem", None),
        ("sjq.defaults.procs = 1", "default_procs", 1),
        ("sjq.defaults.mem = 100M", "default_mem", 100 * 1024**2),
        ("sjq.defaults.mem = 0", "default_mem", 0),
        ("sjq.db = /var/lib/sjq/jobs.db", "db", "/var/lib/sjq/jobs.db"),
        ("sjq.spool = /var/spool/sjq", "spool", "/var/spool/sjq"),
        ("sjq.tmpdir = /scratch", "tmpdir", "/scratch"),
        ("sjq.killgrace = 30s", "killgrace", 30.0),
        ("sjq.killgrace = 0", "killgrace", 0.0),
        ("sjq.maxsrc = 1M", "maxsrc", 1024**2),
        ("sjq.maxline = 1K", "maxline", 1024),
        ("sjq.conntimeout = 2m", "conntimeout", 120.0),
        ("sjq.maxconns = 8", "maxconns", 8),
        ("sjq.keep = 1-00:00:00", "keep", 86400.0),
        ("sjq.keep = 12h", "keep", 43200.0),
        ("sjq.keep = 0", "keep", 0.0),
        ("sjq.keep.count = 500", "keepcount", 500),
        ("sjq.keep.count = 0", "keepcount", 0),
        ("sjq.keep.count = none", "keepcount", None),
        ("sjq.sync = FULL", "sync", "full"),
        ("sjq.sync = normal", "sync", "normal"),
        ("sjq.loglevel = Debug", "loglevel", "debug"),
        ("sjq.loglevel = warning", "loglevel", "warning"),
        ("sjq.loglevel = error", "loglevel", "error"),
    ],
)
def test_each_key_parses(home: Path, line: str, attr: str, expected: object) -> None:
    assert getattr(load_text(home, line + "\n"), attr) == expected


@pytest.mark.parametrize("word", ["T", "t", "true", "TRUE", "yes", "Y", "1", "on"])
def test_true_words(home: Path, word: str) -> None:
    assert load_text(home, f"sjq.daemon={word}").daemon is True


@pytest.mark.parametrize("word", ["F", "f", "false", "False", "no", "N", "0", "off"])
def test_false_words(home: Path, word: str) -> None:
    assert load_text(home, f"sjq.autoshutdown={word}").autoshutdown is False


def test_auto_can_be_written_explicitly(home: Path, tmp_path: Path) -> None:
    cfg = load_text(
        home,
        "sjq.maxprocs = AUTO\nsjq.maxmem = auto\nsjq.tmpdir = auto\n",
        env={"TMPDIR": str(tmp_path)},
    )
    assert cfg.maxprocs == len(os.sched_getaffinity(0))
    assert cfg.maxmem == defaults(home).maxmem
    assert cfg.tmpdir == str(tmp_path)


# --- errors: every one names where and which key -----------------------------------------------


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("sjq.maxmem = lots", "cannot read memory size 'lots' (expected e.g. 512M, 2G, 1.5G)"),
        ("sjq.maxmem = 0", "must be more than 0"),
        ("sjq.maxsrc = 0", "must be more than 0"),
        ("sjq.maxline = -1", "cannot read memory size"),
        ("sjq.defaults.mem = 2X", "cannot read memory size"),
        ("sjq.maxprocs = 0", "must be at least 1, got 0"),
        ("sjq.maxprocs = -2", "must be at least 1, got -2"),
        ("sjq.maxprocs = 2.5", "expected a whole number, got '2.5'"),
        ("sjq.maxprocs = none", "expected a whole number, got 'none'"),
        ("sjq.maxprocs = \u00b2", "expected a whole number"),
        ("sjq.maxprocs = 99999999999999999999", "too large"),
        ("sjq.defaults.procs = 0", "must be at least 1"),
        ("sjq.maxconns = 0", "must be at least 1"),
        ("sjq.keep.count = -1", "must be at least 0"),
        ("sjq.daemon = maybe", "expected T or F"),
        ("sjq.autoshutdown = 2", "expected T or F"),
        ("sjq.schedtime = 0", "must be more than 0 seconds"),
        ("sjq.conntimeout = 0s", "must be more than 0 seconds"),
        ("sjq.waittime = soon", "cannot read duration 'soon'"),
        ("sjq.keep = -5", "cannot read duration '-5'"),
        ("sjq.killgrace = " + "9" * 400, "too large"),
        ("sjq.sync = off", "expected one of normal, full, got 'off'"),
        ("sjq.loglevel = verbose", "expected one of debug, info, warning, error"),
        ("sjq.socket = none", "cannot be none; give a path"),
        ("sjq.db = $NO_SUCH_VARIABLE_HERE/x.db", "$NO_SUCH_VARIABLE_HERE is not set"),
        ("sjq.spool = ${NO_SUCH_VARIABLE_HERE}", "$NO_SUCH_VARIABLE_HERE is not set"),
        ("sjq.pidfile = ~no_such_user_here/x.pid", "no user 'no_such_user_here'"),
        ("sjq.maxmem =", "no value after '='; delete the line for the default (auto)"),
        ("sjq.maxmem = # nothing", "no value after '='"),
        ('sjq.socket = ""', "no value after '='"),
        ('sjq.socket = "/tmp/x', 'no closing "'),
        ("sjq.socket = '/tmp/x' y", "unexpected text after the closing quote"),
    ],
)
def test_bad_value_names_file_line_and_key(home: Path, line: str, reason: str) -> None:
    key = line.partition("=")[0].strip()
    message = error_of(home, f"# header\n\n{line}\n")
    assert message.startswith(f"~/.sjqrc:3: {key}: ")
    assert reason in message


def test_error_message_matches_the_contract_example(home: Path) -> None:
    text = "\n" * 11 + "sjq.maxmem = lots\n"
    assert error_of(home, text) == (
        "~/.sjqrc:12: sjq.maxmem: cannot read memory size 'lots' (expected e.g. 512M, 2G, 1.5G)"
    )


def test_config_error_carries_its_parts(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(home, "sjq.maxprocs = many\n")
    err = info.value
    assert isinstance(err, ValueError)
    assert (err.origin, err.key) == ("~/.sjqrc:1", "sjq.maxprocs")
    assert err.reason == "expected a whole number, got 'many'"


@pytest.mark.parametrize("line", ["maxprocs 4", "= 4", "[sjq]", "sjq.maxprocs: 4"])
def test_line_without_key_and_value(home: Path, line: str) -> None:
    message = error_of(home, f"sjq.maxprocs = 2\n{line}\n")
    assert message == f"~/.sjqrc:2: expected 'key = value', got {line!r}"


def test_a_key_set_twice_is_an_error(home: Path) -> None:
    message = error_of(home, "sjq.maxprocs = 2\n\nSJQ.MAXPROCS = 3\n")
    assert message == "~/.sjqrc:3: SJQ.MAXPROCS: set twice (also on line 1); keep one"


def test_unreadable_encoding_names_the_line(home: Path) -> None:
    (home / ".sjqrc").write_bytes(b"sjq.maxprocs = 2\nsjq.socket = /tmp/\xff.sock\n")
    with pytest.raises(ConfigError, match=r"^~/\.sjqrc:2: not UTF-8 text$"):
        load_config(environ=env_for(home))


def test_a_directory_is_not_a_config_file(home: Path) -> None:
    (home / ".sjqrc").mkdir()
    with pytest.raises(ConfigError, match=r"^~/\.sjqrc: cannot read config file: Is a directory"):
        load_config(environ=env_for(home))


# --- unknown keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "suggestion"),
    [
        ("sjq.maxproc", "sjq.maxprocs"),
        ("sjq.maxmemory", "sjq.maxmem"),
        ("maxprocs", "sjq.maxprocs"),
        ("SJQ_DEFAULTS_MEM", "sjq.defaults.mem"),
        ("sjq.default.procs", "sjq.defaults.procs"),
        ("sjq.keep_count", "sjq.keep.count"),
    ],
)
def test_unknown_key_suggests_the_closest(home: Path, key: str, suggestion: str) -> None:
    message = error_of(home, f"{key} = 4\n")
    assert message == f"~/.sjqrc:1: {key}: unknown key; did you mean {suggestion}?"


def test_unknown_key_without_a_close_match_lists_the_keys(home: Path) -> None:
    message = error_of(home, "colour = blue\n")
    assert message.startswith("~/.sjqrc:1: colour: unknown key; the keys are sjq.socket, ")
    assert all(name in message for name in KEYS)


def test_keys_are_case_insensitive(home: Path) -> None:
    cfg = load_text(home, "SJQ.MaxProcs = 3\nSjq.Defaults.Mem = 1G\n")
    assert (cfg.maxprocs, cfg.default_mem) == (3, G)


def test_sjq_0_1_names_still_read(home: Path) -> None:
    cfg = load_text(home, "sjq.log = none\nsjq.daemonize = T\nsjq.maxjobs = 10000\n")
    assert (cfg.logfile, cfg.daemon, cfg.keepcount) == (None, True, 10000)
    message = error_of(home, "sjq.logfile = none\nsjq.log = /tmp/x.log\n")
    assert message == "~/.sjqrc:2: sjq.log: set twice (also on line 1); keep one"


# --- comments and quoting ----------------------------------------------------------------------


def test_comments_blank_lines_and_spacing(home: Path) -> None:
    text = (
        "\ufeff# a whole-line comment\r\n"
        "\r\n"
        "   # an indented comment\n"
        "sjq.maxprocs=3\n"
        "\tsjq.maxconns   =   7   # trailing comment\n"
        "sjq.socket = /tmp/a#b.sock\n"
        "sjq.pidfile = /tmp/x.pid\t# tab before the comment\n"
        "sjq.db = /tmp/j.db # sjq.keep = 1 is only a comment here\n"
        "# sjq.maxmem = lots\n"
    )
    cfg = load_text(home, text)
    assert (cfg.maxprocs, cfg.maxconns) == (3, 7)
    assert cfg.socket == "/tmp/a#b.sock"
    assert cfg.pidfile == "/tmp/x.pid"
    assert cfg.db == "/tmp/j.db"
    assert cfg.keep == 7 * 86400.0


def test_quotes_keep_spaces_and_hashes(home: Path) -> None:
    text = "sjq.socket = \"/tmp/my jobs #1.sock\"  # comment\nsjq.logfile = '/tmp/l og'\n"
    cfg = load_text(home, text)
    assert cfg.socket == "/tmp/my jobs #1.sock"
    assert cfg.logfile == "/tmp/l og"


def test_a_line_number_counts_form_feeds_as_text(home: Path) -> None:
    # str.splitlines() would split on \x0c and shift every later line number.
    message = error_of(home, "# page one\x0c page two\nsjq.maxprocs = x\n")
    assert message.startswith("~/.sjqrc:2: sjq.maxprocs: ")


# --- paths -------------------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path, home: Path) -> None:
    conf = tmp_path / "etc" / "sjq"
    conf.mkdir(parents=True)
    (conf / "rc").write_text("sjq.db = state/jobs.db\nsjq.spool = ../spool\nsjq.logfile = log\n")
    cfg = load_config(str(conf / "rc"), environ=env_for(home))
    assert cfg.db == str(conf / "state" / "jobs.db")
    assert cfg.spool == str(tmp_path / "etc" / "spool")
    assert cfg.logfile == str(conf / "log")
    assert cfg.source == str(conf / "rc")


def test_relative_paths_from_environment_and_command_line_use_the_cwd(home: Path) -> None:
    cfg = load_config(
        environ=env_for(home, SJQ_SOCKET="rel.sock"), overrides={"sjq.db": "./x/../y.db"}
    )
    assert cfg.socket == os.path.join(os.getcwd(), "rel.sock")
    assert cfg.db == os.path.join(os.getcwd(), "y.db")


def test_tilde_and_variables_expand_from_the_given_environ(home: Path) -> None:
    root_home = os.path.expanduser("~root")
    text = (
        "sjq.socket = ~/s.sock\n"
        "sjq.pidfile = $HOME/p.pid\n"
        "sjq.db = ${SCRATCH}/db/$USER.db\n"
        "sjq.spool = ~root/spool\n"
        "sjq.logfile = ~\n"
        "sjq.tmpdir = /tmp/$5\n"
    )
    cfg = load_text(home, text, env={"SCRATCH": "/scratch", "USER": "ann"})
    assert cfg.socket == f"{home}/s.sock"
    assert cfg.pidfile == f"{home}/p.pid"
    assert cfg.db == "/scratch/db/ann.db"
    assert cfg.spool == f"{root_home.rstrip('/')}/spool"
    assert cfg.logfile == str(home)
    assert cfg.tmpdir == "/tmp/$5"  # not a variable name: left alone, as a shell would


def test_output_patterns_stay_relative_to_each_jobs_cwd(tmp_path: Path, home: Path) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "rc").write_text(
        "sjq.defaults.stdout = logs/%x.%j.out\nsjq.defaults.stderr = ~/err/$PROJECT-%j.err\n"
    )
    cfg = load_config(str(conf / "rc"), environ=env_for(home, PROJECT="p1"))
    assert cfg.default_stdout == "logs/%x.%j.out"  # not made relative to the file: to the CWD
    assert cfg.default_stderr == f"{home}/err/p1-%j.err"
    cfg = load_config(os.devnull, environ=env_for(home, SJQ_DEFAULTS_STDOUT="%%j 100%"))
    assert cfg.default_stdout == "%%j 100%"  # patterns are the daemon's to expand, per job


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("logs/", "'logs/' names a directory; end it with a file name, e.g. logs/%j.out"),
        ("$NOPE/%j.out", "$NOPE is not set"),
    ],
)
def test_bad_output_patterns(home: Path, value: str, message: str) -> None:
    assert error_of(home, f"sjq.defaults.stdout = {value}\n") == (
        f"~/.sjqrc:1: sjq.defaults.stdout: {message}"
    )


def test_a_home_containing_a_dollar_is_not_expanded_again(tmp_path: Path) -> None:
    odd = tmp_path / "$X"
    odd.mkdir()
    cfg = load_config(environ={"HOME": str(odd)})
    assert cfg.socket == f"{odd}/.sjq.sock"


# --- which file --------------------------------------------------------------------------------


def test_default_file_is_home_sjqrc(home: Path) -> None:
    assert config_path({"HOME": str(home)}) == f"{home}/.sjqrc"
    assert DEFAULT_PATH == "~/.sjqrc"
    cfg = load_text(home, "sjq.maxprocs = 3\n")
    assert (cfg.maxprocs, cfg.source) == (3, f"{home}/.sjqrc")


def test_sjq_config_names_the_file(tmp_path: Path, home: Path) -> None:
    other = tmp_path / "other.rc"
    other.write_text("sjq.maxprocs = 5\n")
    (home / ".sjqrc").write_text("sjq.maxprocs = 3\n")
    env = env_for(home, SJQ_CONFIG=str(other))
    assert config_path(env) == str(other)
    cfg = load_config(environ=env)
    assert (cfg.maxprocs, cfg.source) == (5, str(other))
    # An empty SJQ_CONFIG is unset, as for every SJQ_ variable.
    assert load_config(environ=env_for(home, SJQ_CONFIG="")).maxprocs == 3


def test_path_argument_beats_sjq_config(tmp_path: Path, home: Path) -> None:
    (tmp_path / "a.rc").write_text("sjq.maxprocs = 5\n")
    (tmp_path / "b.rc").write_text("sjq.maxprocs = 6\n")
    cfg = load_config(str(tmp_path / "b.rc"), environ=env_for(home, SJQ_CONFIG=str(tmp_path)))
    assert cfg.maxprocs == 6


def test_missing_default_file_means_defaults(home: Path) -> None:
    assert load_config(environ=env_for(home)).source is None


def test_missing_file_named_by_sjq_config_is_an_error(tmp_path: Path, home: Path) -> None:
    missing = tmp_path / "nope.rc"
    with pytest.raises(ConfigError) as info:
        load_config(environ=env_for(home, SJQ_CONFIG=str(missing)))
    assert str(info.value) == f"{missing}: no such config file (named by $SJQ_CONFIG)"


def test_missing_file_named_explicitly_is_an_error(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(str(home / "nope.rc"), environ=env_for(home))
    assert str(info.value) == "~/nope.rc: no such config file (named on the command line)"


# --- precedence --------------------------------------------------------------------------------


def test_overrides_beat_environment_beat_file_beat_default(home: Path) -> None:
    text = "sjq.maxprocs = 3\nsjq.maxconns = 10\nsjq.keep = 1d\n"
    env = {"SJQ_MAXPROCS": "5", "SJQ_MAXCONNS": "20"}
    cfg = load_text(home, text, env=env, overrides={"sjq.maxprocs": "7"})
    assert (cfg.maxprocs, cfg.maxconns, cfg.keep, cfg.killgrace) == (7, 20, 86400.0, 5.0)


def test_only_the_winning_value_is_parsed(home: Path) -> None:
    cfg = load_text(home, "sjq.maxmem = lots\n", env={"SJQ_MAXMEM": "4G"})
    assert cfg.maxmem == 4 * G


def test_environment_reads_only_the_tables_keys(home: Path) -> None:
    # What a job sees: sjq sets these for it, and they are not settings.
    env = {
        "SJQ_JOBID": "12",
        "SJQ_JOBNAME": "x",
        "SJQ_PROCS": "two",
        "SJQ_MEM": "lots",
        "SJQ_SOCKET": "/tmp/daemon.sock",
        "SJQ_MAXMEM": "",  # empty: unset
    }
    cfg = load_config(environ=env_for(home, **env))
    assert cfg.socket == "/tmp/daemon.sock"


def test_environment_values_for_dotted_keys(home: Path) -> None:
    env = {"SJQ_DEFAULTS_MEM": "1G", "SJQ_DEFAULTS_PROCS": "2", "SJQ_KEEP_COUNT": "9"}
    cfg = load_config(environ=env_for(home, SJQ_MAXPROCS="4", **env))
    assert (cfg.default_mem, cfg.default_procs, cfg.keepcount) == (G, 2, 9)


def test_environment_error_names_the_variable(home: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ=env_for(home, SJQ_MAXMEM="lots"))
    assert str(info.value).startswith("$SJQ_MAXMEM: sjq.maxmem: cannot read memory size 'lots'")


def test_command_line_errors(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"^command line: sjq\.maxprocs: must be at least 1"):
        load_config(environ=env_for(home), overrides={"sjq.maxprocs": "0"})
    with pytest.raises(ConfigError, match=r"^command line: sjq\.maxprocs: empty value$"):
        load_config(environ=env_for(home), overrides={"sjq.maxprocs": " "})
    with pytest.raises(
        ConfigError, match=r"^command line: sjq\.maxproc: unknown key; did you mean sjq\.maxprocs\?"
    ):
        load_config(environ=env_for(home), overrides={"sjq.maxproc": "4"})


# --- limits that depend on each other ----------------------------------------------------------


def test_default_mem_is_capped_at_maxmem(home: Path) -> None:
    assert load_text(home, "sjq.maxmem = 1G\n").default_mem == G


def test_default_mem_is_capped_at_detected_memory(home: Path) -> None:
    cfg = load_text(home, "sjq.defaults.mem = 1P\n")
    assert cfg.maxmem is not None
    assert cfg.default_mem == cfg.maxmem


def test_default_mem_above_a_maxmem_you_set_is_an_error(home: Path) -> None:
    message = error_of(home, "sjq.defaults.mem = 4G\n", env={"SJQ_MAXMEM": "1G"})
    assert (
        message == "~/.sjqrc:1: sjq.defaults.mem: 4G is more than sjq.maxmem (1G, from $SJQ_MAXMEM)"
    )


def test_default_mem_is_not_capped_without_memory_accounting(home: Path) -> None:
    cfg = load_text(home, "sjq.maxmem = none\nsjq.defaults.mem = 1P\n")
    assert (cfg.maxmem, cfg.default_mem) == (None, parse_mem("1P"))


def test_default_procs_is_capped_at_detected_cpus(home: Path) -> None:
    cfg = load_text(home, "sjq.defaults.procs = 100000\n")
    assert cfg.default_procs == cfg.maxprocs == len(os.sched_getaffinity(0))


def test_default_procs_above_a_maxprocs_you_set_is_an_error(home: Path) -> None:
    message = error_of(home, "sjq.maxprocs = 2\nsjq.defaults.procs = 3\n")
    assert (
        message
        == "~/.sjqrc:2: sjq.defaults.procs: 3 is more than sjq.maxprocs (2, from ~/.sjqrc:1)"
    )


# --- sjqrc.example -----------------------------------------------------------------------------

_COMMENTED = re.compile(r"^# (sjq\.[a-z.]+) = (.*)$")


def _example_settings() -> list[tuple[str, str]]:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    return [(m[1], m[2]) for m in map(_COMMENTED.match, lines) if m]


def test_example_shows_every_key_once_with_its_default() -> None:
    shown = _example_settings()
    assert sorted(name for name, _ in shown) == sorted(KEYS)
    for name, value in shown:
        assert value == KEYS[name].default, name


def test_example_uncommented_is_accepted_and_means_the_defaults(tmp_path: Path, home: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# (sjq\.[a-z.]+ = )", r"\1", text)
    rc = tmp_path / "rc"
    rc.write_text(uncommented, encoding="utf-8")
    cfg = load_config(str(rc), environ=env_for(home))
    assert cfg.source == str(rc)
    assert cfg._replace(source=None) == defaults(home)


def test_example_as_shipped_changes_nothing(home: Path) -> None:
    cfg = load_config(str(EXAMPLE), environ=env_for(home))
    assert cfg._replace(source=None) == defaults(home)


# --- robustness --------------------------------------------------------------------------------

_chars = st.characters(codec="utf-8")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("any")


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.one_of(
            st.text(_chars, max_size=40),
            st.tuples(st.sampled_from([*KEYS, "sjq.maxjobs"]), st.text(_chars, max_size=20)).map(
                "=".join
            ),
        ),
        max_size=6,
    )
)
def test_any_file_gives_a_config_or_a_config_error(scratch: Path, lines: list[str]) -> None:
    rc = scratch / "rc"
    rc.write_text("\n".join(lines), encoding="utf-8")
    try:
        load_config(str(rc), environ={"HOME": str(scratch)})
    except ConfigError as e:
        message = str(e)
    else:
        return
    assert message.startswith("~/rc:")


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(list(KEYS)), value=st.text(_chars, max_size=20))
def test_any_environment_value_gives_a_config_or_a_config_error(key: str, value: str) -> None:
    env = {"HOME": "/nonexistent", KEYS[key].env: value}
    try:
        load_config(os.devnull, environ=env)
    except ConfigError as e:
        message = str(e)
    else:
        return
    assert message.startswith(f"${KEYS[key].env}: {key}: ")


# --- import cost -------------------------------------------------------------------------------


def test_importing_and_loading_stays_light(tmp_path: Path) -> None:
    # -S: site-packages .pth hooks import tempfile themselves; this measures sjq alone.
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import sjq.config\n"
        f"sjq.config.load_config(environ={{'HOME': {str(tmp_path)!r}}})\n"
        "heavy = {'psutil', 'asyncio', 'sqlite3', 'subprocess', 'tempfile', 'difflib'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# --- the client's view ---------------------------------------------------------------------------


def test_client_config_agrees_with_load_config(home: Path) -> None:
    from sjq.config import client_config

    rc = home / "rc"
    rc.write_text("sjq.socket = sock\nsjq.logfile = none\nsjq.maxprocs = 3\n")
    env = {**env_for(home), "SJQ_PIDFILE": str(home / "p.pid")}
    full = load_config(str(rc), environ=env, overrides={"sjq.socket": "/run/x.sock"})
    mine = client_config(str(rc), environ=env, overrides={"sjq.socket": "/run/x.sock"})
    assert (mine.socket, mine.logfile, mine.pidfile, mine.source) == (
        full.socket,
        full.logfile,
        full.pidfile,
        full.source,
    )
    assert mine.socket == "/run/x.sock"
    assert mine.pidfile == str(home / "p.pid")


def test_client_config_refuses_unknown_keys_and_bad_client_values(home: Path) -> None:
    from sjq.config import client_config

    rc = home / "rc"
    rc.write_text("sjq.sockte = x\n")
    with pytest.raises(ConfigError, match=r"sjq\.socket"):
        client_config(str(rc), environ=env_for(home))
    rc.write_text("sjq.socket = $NOT_SET_ANYWHERE/s\n")
    with pytest.raises(ConfigError, match=r"rc:1: sjq.socket"):
        client_config(str(rc), environ=env_for(home))
