"""toil_batch_system_sjq: registers Toil's ``--batchSystem sjq``; importing it must never fail.

Toil imports every top-level package whose name starts with ``toil_batch_system_`` when any
Toil command builds its option parser, and lets nothing it raises pass: an exception here
would break every Toil command on the machine, whatever batch system it uses. So this module
imports only Toil's registry, and only on success registers a factory; the batch system
itself (and sjq's client) is imported when Toil asks for it, where an ImportError is what
Toil expects from a batch system that cannot load (it then skips its options).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toil.batchSystems.abstractBatchSystem import AbstractBatchSystem

__all__ = ["NAME", "__version__", "factory"]

__version__ = "0.1.0"

NAME = "sjq"
"""The name users give to ``--batchSystem``."""


def factory() -> type[AbstractBatchSystem]:
    """The batch system class, imported on first use. Raises ImportError (only) when it
    cannot be loaded, with the reason."""
    try:
        from ._batch_system import SjqBatchSystem  # noqa: PLC0415 -- only when Toil asks
    except ImportError:
        raise
    except Exception as e:
        raise ImportError(f"the sjq batch system cannot be loaded: {e!r}") from e
    return SjqBatchSystem


def _register() -> None:
    try:
        from toil.batchSystems.registry import add_batch_system_factory  # noqa: PLC0415

        add_batch_system_factory(NAME, factory)
    except Exception as e:  # never let Toil's plugin scan fail because of us
        # Toil silences loggers outside its own "toil" tree.
        logging.getLogger("toil.batchSystems.sjq").warning(
            "the sjq batch system is not available (%r); check the toil-batch-system-sjq install",
            e,
        )


_register()
