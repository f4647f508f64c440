"""sjq: the Simple Job Queue daemon. Importing this package must stay cheap (no asyncio, sqlite3, psutil)."""

__version__ = "0.2.0.dev0"
