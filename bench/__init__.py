"""sjq benchmark harness: every figure beside a baseline measured in the same run.

Run it as ``python -m bench`` (``--help`` for options). It speaks the raw wire
protocol itself (``bench.proto``) and imports nothing from ``sjq`` or
``sjq_client``, so it can measure any daemon that speaks docs/protocol.md.
"""
