"""sjq, the Simple Job Queue: the daemon. Cheap to import (no asyncio, sqlite3, psutil)."""

__version__ = "0.2.0.dev0"
