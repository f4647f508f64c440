"""Tests of the sjq client side: the `sjq` CLI, the Python client, auto-start, sjq.sh.

A package (this file) so that its conftest does not shadow tests/conftest.py, which the test
modules import from as `conftest`.
"""
