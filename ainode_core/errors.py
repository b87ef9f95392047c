"""The one exception hierarchy of ainode.

Every error that ainode raises on purpose derives from :class:`AINodeError`, and also from the
matching built-in exception (``ValueError``, ``OSError``, ...), so that callers can catch either.
Messages say what is wrong, the value seen, and what to do about it.

This module lives in the shared kernel ``ainode_core``, below every layer, so that ``storage``,
``models``, ``training`` and ``node`` raise and catch these errors without importing ``pipelines``
(the methods). ``pipelines.errors`` re-exports the same classes for the pipelines' own modules.
"""

from __future__ import annotations


class AINodeError(Exception):
    """Base class of all errors raised by ainode."""


class ConfigError(AINodeError, ValueError):
    """The configuration file, an environment variable or a command-line flag is invalid."""


class InvalidInputError(AINodeError, ValueError):
    """An input DICOM object cannot be used (truncated, missing tags, undecodable pixels)."""


class InvalidSeriesError(InvalidInputError):
    """A series cannot be turned into an image volume (mixed geometry, wrong modality, empty)."""


class UnsupportedInputError(InvalidInputError):
    """The input is valid DICOM but outside what a protocol can measure (e.g. a localizer)."""


class PipelineError(AINodeError, RuntimeError):
    """A pipeline failed on an input it accepted (e.g. no L3 vertebra could be found)."""


class OutputError(AINodeError, RuntimeError):
    """A DICOM output object (SEG, SR, SC) could not be built or failed validation."""


class StorageError(AINodeError, OSError):
    """The instance store or the job database could not be read or written."""


class SendError(AINodeError, ConnectionError):
    """A C-STORE to a destination failed (association refused, aborted, or non-success status)."""


class RoutingError(AINodeError, ValueError):
    """A routing rule is invalid."""


class ModelError(AINodeError, RuntimeError):
    """A model in the registry is missing, invalid, or its weights do not match their sha256."""


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
