"""Timestamp collector run as a child of the bench: ``python stamper.py FIFO``.

Reads lines that jobs write to FIFO and prints ``<CLOCK_MONOTONIC ns> <line>``
for each on stdout, at once; a line ``quit`` ends it. Imports nothing from the
bench so it starts fast and stays out of the bench's GIL.
"""

import os
import sys
import time


def main() -> None:
    # O_RDWR keeps a writer on the FIFO: no EOF between jobs, no blocking open.
    fd = os.open(sys.argv[1], os.O_RDWR)
    out = sys.stdout.buffer
    out.write(b"%d ready\n" % time.monotonic_ns())
    out.flush()
    buf = b""
    while True:
        chunk = os.read(fd, 65536)
        now = time.monotonic_ns()
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line == b"quit":
                return
            out.write(b"%d %s\n" % (now, line))
        out.flush()


if __name__ == "__main__":
    main()
