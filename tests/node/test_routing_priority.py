"""A routing rule's ``priority`` reaches the routing decision and the job queue: the shipped
brain-gwr rules are urgent, other rules routine unless they say otherwise, unknown values are
refused with the rule's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from node.routing import default_rules, load_rules, route_series
from pipelines.errors import RoutingError
from storage.database import JobDatabase


def _ct(body_part: str) -> list[Dataset]:
    headers = []
    for index in range(3):
        ds = Dataset()
        ds.Modality = "CT"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.BodyPartExamined = body_part
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, float(index)]
        ds.SliceThickness = 1.0
        headers.append(ds)
    return headers


def test_the_default_head_ct_rule_is_urgent_and_others_routine(tmp_path: Path) -> None:
    head = route_series(_ct("HEAD"), default_rules())
    assert head.protocol == "brain-gwr" and head.priority == "urgent"
    abdomen = route_series(_ct("ABDOMEN"), default_rules())
    assert abdomen.protocol == "l3-body-composition" and abdomen.priority == "routine"

    db = JobDatabase(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    try:
        for series, decision in (("1.2.1", abdomen), ("1.2.2", head)):
            db.record_instance(
                sop_instance_uid=f"{series}.1", study_instance_uid="1.2",
                series_instance_uid=series, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1", modality="CT",
                path=f"/store/{series}.dcm", calling_ae_title="CT1",
            )
            (job_id,) = db.complete_quiet_series(0)
            db.set_routing(job_id, protocol=decision.protocol, rule=decision.rule,
                           reason=decision.reason, priority=decision.priority)
        claimed = db.claim_job("w", 60)
        assert claimed is not None and claimed.protocol == "brain-gwr"  # queued second, runs first
    finally:
        db.close()


def test_a_configured_priority_is_carried_and_a_wrong_one_refused() -> None:
    rules = load_rules([{"name": "batch", "protocol": "l3-body-composition", "priority": "low",
                         "match": {"modality": ["CT"]}}])
    assert route_series(_ct("ABDOMEN"), rules).priority == "low"
    with pytest.raises(RoutingError, match=r"batch.*priority.*urgent.*routine.*low"):
        load_rules([{"name": "batch", "protocol": "l3-body-composition", "priority": "stat"}])
