"""What the output UIDs derive from: the study (completion: study) or the source images."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset

from ainode_core.errors import OutputError
from pipelines.outputs.uids import derive_uid, output_key
from pipelines.types import AlgorithmInfo, PipelineResult, ValidationStatus


def _result(study: str, sops: list[str]) -> PipelineResult:
    sources = []
    for sop in sops:
        ds = Dataset()
        ds.StudyInstanceUID, ds.SOPInstanceUID = study, sop
        sources.append(ds)
    algorithm = AlgorithmInfo(
        name="x", version="1.0", validation_status=ValidationStatus.REFERENCE_METHOD, is_ai=False,
        source="test",
    )
    return PipelineResult(
        protocol="brain-gwr", algorithm=algorithm, source_datasets=sources, segments=[],
        label_map=np.zeros((len(sops), 2, 2), np.uint8),
    )


def test_study_scope_gives_the_same_uids_for_another_series_of_the_study() -> None:
    thin, thick = _result("1.2.3", ["1.2.3.1", "1.2.3.2"]), _result("1.2.3", ["1.2.3.9"])
    assert derive_uid(*output_key(thin, "study"), "sr") == derive_uid(*output_key(thick, "study"), "sr")
    assert derive_uid(*output_key(thin, "series"), "sr") != derive_uid(*output_key(thick, "series"), "sr")
    other_study = _result("1.2.4", ["1.2.3.1", "1.2.3.2"])
    assert output_key(other_study, "study") != output_key(thin, "study")


def test_study_scope_needs_exactly_one_study() -> None:
    mixed = _result("1.2.3", ["1.2.3.1"])
    mixed.source_datasets[0].StudyInstanceUID = "1.2.3"
    extra = Dataset()
    extra.StudyInstanceUID, extra.SOPInstanceUID = "1.2.4", "1.2.4.1"
    mixed.source_datasets.append(extra)
    with pytest.raises(OutputError, match="exactly one study"):
        output_key(mixed, "study")
    with pytest.raises(OutputError, match="scope"):
        output_key(mixed, "patient")
