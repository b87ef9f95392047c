"""Deterministic UIDs of the output objects.

All UIDs are derived from what the result is about, the protocol, the algorithm name and version
and the output kind (:func:`derive_uid`). What the result is about depends on the node's
completion mode (:func:`output_key`): with ``completion: study`` (one result set per study and
protocol) it is the Study Instance UID, so a re-run on another series of the study (a late series)
or a re-sent study replaces the earlier results; with ``completion: series`` it is the sorted source
SOP Instance UIDs, so each series keeps its own results. The PACS replaces rather than duplicates
results; a new algorithm version gives new UIDs.
"""

from __future__ import annotations

import re
import uuid

from pipelines.errors import OutputError
from pipelines.types import PipelineResult


#: Namespace of the name-based UUIDs behind :func:`derive_uid` (fixed; changing it changes
#: every output UID).
AINODE_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ainode:dicom-outputs")


def derive_uid(*parts: str) -> str:
    """Derive a deterministic UID from the given strings.

    The parts are joined (length-prefixed, so that ``("ab", "c")`` and ``("a", "bc")`` differ)
    and turned into an RFC 4122 name-based (version 5, SHA-1) UUID in the namespace
    :data:`AINODE_UID_NAMESPACE`, written as a ``2.25.<decimal>`` UID (PS3.5 B.2, "UUID Derived
    UID"). The same parts always give the same UID. (``pydicom.uid.generate_uid(prefix=None)``
    cannot be used: it ignores ``entropy_srcs`` and returns a random UUID.)

    Parameters
    ----------
    *parts:
        Strings identifying the object, e.g. sorted source SOP Instance UIDs, protocol,
        algorithm name and version, output kind.

    Returns
    -------
    str
        A valid UID of at most 44 characters.

    Raises
    ------
    OutputError
        If no part is given.
    """
    if not parts:
        raise OutputError("derive_uid needs at least one part to derive a UID from")
    name = "".join(f"{len(str(p))}:{p};" for p in parts)
    return f"2.25.{uuid.uuid5(AINODE_UID_NAMESPACE, name).int}"


def output_key(result: PipelineResult, scope: str = "series") -> list[str]:
    """Entropy parts shared by every UID of one result.

    Parameters
    ----------
    result:
        The pipeline result.
    scope:
        ``"study"``: the result stands for its study and protocol (parts: Study Instance UID,
        protocol, algorithm name and version); ``"series"``: for its source images (the sorted
        source SOP Instance UIDs instead of the Study Instance UID).

    Raises
    ------
    OutputError
        If ``scope`` is neither, or a study-scoped result's sources lack a Study Instance UID.
    """
    if scope == "study":
        studies = sorted({str(ds.get("StudyInstanceUID", "")) for ds in result.source_datasets})
        if len(studies) != 1 or not studies[0]:
            raise OutputError(
                f"a study-scoped result needs sources of exactly one study; got {len(studies)} "
                "Study Instance UID(s)"
            )
        about = "study:" + studies[0]
    elif scope == "series":
        about = "|".join(sorted(str(ds.SOPInstanceUID) for ds in result.source_datasets))
    else:
        raise OutputError(f"output UID scope must be 'study' or 'series', not {scope!r}")
    return [about, result.protocol, result.algorithm.name, result.algorithm.version]


def content_label(protocol: str, suffix: str) -> str:
    """A Content Label (VR CS: upper case, digits, space, underscore; at most 16 characters)."""
    label = re.sub(r"[^A-Z0-9_]", "_", protocol.upper())
    label = re.sub(r"_+", "_", label).strip("_")
    label = (label[: 16 - len(suffix) - 1] + "_" + suffix) if label else suffix
    return label[:16]
