"""The plugin's mapping of Snakemake resources to sjq's requests: pure functions."""

from __future__ import annotations

import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sjq.protocol import Submit, SubmitOptions, encode_request

from .conftest import PLUGIN_DIR

sys.path.insert(0, str(PLUGIN_DIR))
from snakemake_executor_plugin_sjq import _mapping

sys.path.remove(str(PLUGIN_DIR))


def test_memory_prefers_the_mebibytes_snakemake_rounds_up() -> None:
    assert _mapping.memory({"mem_mb": 200, "mem_mib": 191, "mem": "200 MB"}) == 191 * 2**20
    assert _mapping.memory({"mem_mb": 1000}) == 1_000_000_000
    assert _mapping.memory({"mem_mib": "64"}) == 64 * 2**20
    assert _mapping.memory({"tmpdir": "/tmp"}) is None
    with pytest.raises(_mapping.MappingError, match="mem_mib='lots' is not a number"):
        _mapping.memory({"mem_mib": "lots"})


def test_runtime_is_minutes() -> None:
    assert _mapping.time_limit({"runtime": 90}) == 5400.0
    assert _mapping.time_limit({"runtime": 0}) is None
    assert _mapping.time_limit({}) is None


def test_gpus() -> None:
    assert _mapping.gpus({}) == 0
    assert _mapping.gpus({"gpu": 2}) == 2
    assert _mapping.gpus({"gpus": 1, "gpu": 3}) == 1
    with pytest.raises(_mapping.MappingError, match="whole number of GPUs"):
        _mapping.gpus({"gpu": 1.5})


def test_job_names() -> None:
    assert _mapping.job_name("count", {"sample": "a", "lane": 1}) == "count[sample=a,lane=1]"
    assert _mapping.job_name("total", {}) == "total"


@given(st.text(min_size=1), st.dictionaries(st.text(), st.text(), max_size=5))
def test_a_name_is_always_sendable(rule: str, wildcards: dict[str, str]) -> None:
    name = _mapping.job_name(rule, wildcards)
    assert len(name) <= _mapping.MAX_NAME
    encode_request(Submit(SubmitOptions(name=name), b"#!/bin/sh\n"))  # no ValueError
