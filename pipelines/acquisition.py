"""Acquisition facts read from DICOM headers, shared by routing and the pipelines."""

from __future__ import annotations

from pydicom.dataset import Dataset

#: Values of Contrast/Bolus Agent (0018,0010) that mean "no contrast" in practice (sites write
#: NONE, NO, NATIVE, ... rather than leaving the Type 3 attribute out).
NO_CONTRAST_VALUES = frozenset({"", "NONE", "NO", "N", "0", "-", "NA", "N/A", "NIL", "NATIVE"})


def contrast_recorded(ds: Dataset) -> bool:
    """Whether the header records a contrast agent.

    True when Contrast/Bolus Agent (0018,0010) holds a value other than the "no contrast" words
    in :data:`NO_CONTRAST_VALUES`, or the Contrast/Bolus Agent Sequence (0018,0012) has an item
    (PS3.3 C.7.6.4, Contrast/Bolus Module).
    """
    agent = str(ds.get("ContrastBolusAgent", "") or "").strip().upper()
    if agent not in NO_CONTRAST_VALUES:
        return True
    return bool(ds.get("ContrastBolusAgentSequence"))
