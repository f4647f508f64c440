"""Output file name patterns: Slurm's examples, and Hypothesis properties against a reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sjq.patterns import MAX_PAD, PatternFields, expand

JOB = PatternFields(jobid=128, name="align", user="ana", host="node7")


@pytest.mark.parametrize(
    ("pattern", "expanded"),
    [
        ("out.txt", "out.txt"),
        ("%j.stdout", "128.stdout"),
        ("logs/%x.%j.out", "logs/align.128.out"),
        ("slurm-%A_%a.out", "slurm-128_0.out"),  # not an array: its own id, index 0
        ("job%J.out", "job128.out"),
        ("job%4j.out", "job0128.out"),  # Slurm's own example
        ("%2j-%3a", "128-000"),
        ("%12j", "0000000128"),  # padding stops at 10, as Slurm's
        ("%0j %00004j", "128 0128"),
        ("%5x-%3u-%9N", "align-ana-node7"),  # no padding for text
        ("/scratch/%u/%N/%x", "/scratch/ana/node7/align"),
        ("100%%.txt", "100%.txt"),
        ("%%j", "%j"),
        ("%%%j", "%128"),
        ("%q %5q %Z", "%q %5q %Z"),  # not fields: kept as written, as Slurm does
        ("%", "%"),
        ("a%", "a%"),
        ("%5", "%5"),
        ("%-j", "%-j"),
        ("%ĵ", "%ĵ"),  # a letter, but not an ASCII one
        ("back\\slash%j", "back\\slash128"),  # a backslash is an ordinary character
    ],
)
def test_examples(pattern: str, expanded: str) -> None:
    assert expand(pattern, JOB) == expanded


def test_a_name_is_not_a_path() -> None:
    job = PatternFields(jobid=1, name="../../etc/x", user="u", host="h")
    assert expand("logs/%x.out", job) == "logs/.._.._etc_x.out"


def test_arrays_fill_a_and_A() -> None:
    task = JOB._replace(jobid=131, array_id=128, array_index=3)
    assert expand("%A_%a:%j:%3a", task) == "128_3:131:003"


def test_thousands_of_padding_digits_cost_nothing() -> None:
    assert expand("%" + "9" * 10_000 + "j", JOB) == "0000000128"
    assert expand("%" + "0" * 10_000 + "7j", JOB) == "0000128"


# -- properties --------------------------------------------------------------------------------


def reference(pattern: str, f: PatternFields) -> str:
    """A second, character-by-character reading of the rules, to check `expand` against."""
    numbers = {
        "j": f.jobid,
        "J": f.jobid,
        "A": f.jobid if f.array_id is None else f.array_id,
        "a": 0 if f.array_index is None else f.array_index,
    }
    texts = {"x": f.name, "u": f.user, "N": f.host}
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] != "%":
            out.append(pattern[i])
            i += 1
            continue
        if pattern[i + 1 : i + 2] == "%":
            out.append("%")
            i += 2
            continue
        j = i + 1
        while j < len(pattern) and pattern[j] in "0123456789":
            j += 1
        letter = pattern[j : j + 1]
        if letter in numbers:
            width = min(int(pattern[i + 1 : j] or 0), MAX_PAD)
            out.append(f"{numbers[letter]:0{width}d}")
        elif letter in texts:
            out.append(texts[letter].replace("/", "_"))
        else:
            out.append(pattern[i : j + (1 if letter.isascii() and letter.isalpha() else 0)])
            i = j + (1 if letter.isascii() and letter.isalpha() else 0)
            continue
        i = j + 1
    return "".join(out)


pieces = st.sampled_from(
    ["%", "%%", "%j", "%J", "%x", "%A", "%a", "%u", "%N", "%q", "%3", "%04j", "%12a", "%7x", "/"]
)
patterns = st.lists(pieces | st.text(max_size=3), max_size=12).map("".join)
names = st.text(st.characters(blacklist_characters="\t\n\x00", blacklist_categories=["Cs"]))
fields = st.builds(
    PatternFields,
    jobid=st.integers(1, 2**63 - 1),
    name=names.filter(bool),
    user=st.from_regex(r"[a-z_][a-z0-9_-]{0,8}", fullmatch=True),
    host=st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True),
    array_id=st.none() | st.integers(1, 2**31),
    array_index=st.none() | st.integers(0, 100_000),
)


@settings(max_examples=500)
@given(patterns, fields)
def test_expand_agrees_with_the_reference(pattern: str, f: PatternFields) -> None:
    assert expand(pattern, f) == reference(pattern, f)


@given(st.text(), fields)
def test_escaped_text_comes_back_as_it_was(text: str, f: PatternFields) -> None:
    assert expand(text.replace("%", "%%"), f) == text


@given(st.text().filter(lambda t: "%" not in t), fields)
def test_text_without_a_percent_is_unchanged(text: str, f: PatternFields) -> None:
    assert expand(text, f) == text


@given(patterns, fields)
def test_expansion_adds_no_path_component(pattern: str, f: PatternFields) -> None:
    assert expand(pattern, f).count("/") == pattern.count("/")
