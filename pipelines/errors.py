"""The exception hierarchy, as the pipelines import it: the classes of :mod:`ainode_core.errors`.

The hierarchy itself lives in the shared kernel ``ainode_core`` so that every layer may import it
without depending on the methods; this module hands the same classes on (``pipelines.errors.
StorageError is ainode_core.errors.StorageError``), for the pipelines' modules and for code written
against the earlier location. New code outside ``pipelines`` imports :mod:`ainode_core.errors`.
"""

from __future__ import annotations

from ainode_core.errors import (
    AINodeError,
    ConfigError,
    InvalidInputError,
    InvalidSeriesError,
    ModelError,
    OutputError,
    PipelineError,
    RoutingError,
    SendError,
    StorageError,
    UnsupportedInputError,
)

__all__ = [
    "AINodeError",
    "ConfigError",
    "InvalidInputError",
    "InvalidSeriesError",
    "ModelError",
    "OutputError",
    "PipelineError",
    "RoutingError",
    "SendError",
    "StorageError",
    "UnsupportedInputError",
]
