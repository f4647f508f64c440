"""``python -m sjq_client``: the same as the ``sjq`` command. Imports only sjq_client.cli."""

import sys

from sjq_client.cli import main

sys.exit(main())
