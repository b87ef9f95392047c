"""Coded concepts the output objects use, and their conversion to highdicom.

Sources of the codes: ``docs/outputs.md`` (PS3.16 context groups named beside each one).
"""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from pipelines.types import (
    PRIVATE_SCHEME,
    RESEARCH_USE_DISCLAIMER,
    CodedTerm,
    PipelineResult,
    SegmentDefinition,
)

#: Default procedure reported (TID 1500 row "Procedure reported", CID 100): SCT 363679005.
IMAGING_PROCEDURE = CodedTerm("363679005", "SCT", "Imaging procedure")

#: Segment Algorithm family, PS3.16 CID 7162 "Surface Processing Algorithm Families", the
#: context group highdicom uses for Algorithm Family Code Sequence.
FAMILY_ARTIFICIAL_INTELLIGENCE = CodedTerm("123110", "DCM", "Artificial Intelligence")
#: Rule-based reference methods (Hounsfield bands plus morphology and anatomical rules):
#: CID 7162 has no generic "image processing" code; "Morphological Operations" is the closest.
FAMILY_MORPHOLOGICAL_OPERATIONS = CodedTerm("123104", "DCM", "Morphological Operations")

#: TID 1500 row 12 "Qualitative Evaluations" container (UMLS C0034375); holds CODE/TEXT items.
UMLS_QUALITATIVE_EVALUATIONS = CodedTerm("C0034375", "UMLS", "Qualitative Evaluations")

#: Private concepts (scheme 99AINODE, declared in the Coding Scheme Identification Sequence).
AINODE_VALIDATION_STATUS = CodedTerm(
    "VALSTATUS", PRIVATE_SCHEME, "Algorithm validation status"
)
AINODE_INTENDED_USE = CodedTerm("INTENDEDUSE", PRIVATE_SCHEME, "Intended use")
AINODE_RESEARCH_USE_ONLY = CodedTerm("RUO", PRIVATE_SCHEME, RESEARCH_USE_DISCLAIMER)
AINODE_PROCESSING_WARNING = CodedTerm("WARNING", PRIVATE_SCHEME, "Processing warning")


def concept(term: CodedTerm) -> hd.sr.CodedConcept:
    """A :class:`CodedTerm` as highdicom's coded concept."""
    return hd.sr.CodedConcept(
        value=term.value, scheme_designator=term.scheme, meaning=term.meaning
    )


def algorithm_family(result: PipelineResult) -> CodedTerm:
    """Segment Algorithm family (CID 7162) of the algorithm behind ``result``."""
    return (
        FAMILY_ARTIFICIAL_INTELLIGENCE
        if result.algorithm.is_ai
        else FAMILY_MORPHOLOGICAL_OPERATIONS
    )


def uses_private(segment: SegmentDefinition) -> bool:
    """Whether a segment's codes use the private scheme (declared in the outputs then)."""
    terms = [segment.category, segment.property_type, segment.anatomic_region]
    return any(t is not None and t.scheme == PRIVATE_SCHEME for t in terms)


def private_scheme_item() -> Dataset:
    """Coding Scheme Identification item declaring the private scheme ``99AINODE``."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "ainode private concepts"
    item.CodingSchemeResponsibleOrganization = "ainode project"
    return item
