"""DICOM outputs of any protocol's :class:`~pipelines.types.PipelineResult`: SEG, SR, SC.

Fed only by the method's result (label map on the source frames, segment definitions,
measurements, findings, key-image description) and the source headers; no protocol is known
here by name. One module per job:

* :mod:`pipelines.outputs.build` — :func:`build_outputs` (checks the result, builds the three
  objects), :func:`write_outputs`, :func:`summarise_outputs`;
* :mod:`pipelines.outputs.seg` — the Segmentation;
* :mod:`pipelines.outputs.sr` — the TID 1500 Measurement Report;
* :mod:`pipelines.outputs.sc` — the Secondary Capture key image;
* :mod:`pipelines.outputs.render` — draws a :class:`~pipelines.types.KeyImageSpec` (PIL);
* :mod:`pipelines.outputs.headers` — source-header copy, character set, equipment;
* :mod:`pipelines.outputs.uids` — deterministic UIDs (:func:`derive_uid`);
* :mod:`pipelines.outputs.codes` — the coded concepts used.

See ``docs/outputs.md`` for the codes used and their sources.
"""

from __future__ import annotations

from pipelines.outputs.build import (
    OutputObjects,
    build_outputs,
    summarise_outputs,
    write_outputs,
)
from pipelines.outputs.headers import is_projection_image
from pipelines.outputs.sc import SC_SERIES_NUMBER
from pipelines.outputs.seg import SEG_SERIES_NUMBER
from pipelines.outputs.sr import SR_SERIES_NUMBER
from pipelines.outputs.uids import derive_uid

__all__ = [
    "SC_SERIES_NUMBER",
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "OutputObjects",
    "build_outputs",
    "derive_uid",
    "is_projection_image",
    "summarise_outputs",
    "write_outputs",
]
