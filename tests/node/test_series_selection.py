"""Series selection (node.selection): ranking the series of one study for each protocol.

The summaries come from the real head CT's headers (``summarize_series``), changed the way a
scanner's other reconstructions differ (thickness, kernel, plane, image type), so the ranking
sees real values; no node, no database.
"""

from __future__ import annotations

import dataclasses

import pydicom
import pytest
from pydantic import ValidationError

from node.routing import RoutingDecision, SeriesSummary, summarize_series
from node.selection import (
    SeriesCandidate,
    SeriesPreferences,
    exclusion,
    preferences_for,
    select_series,
)
from pipelines.registry import get_protocol, protocols
from realdata_corpus import case_path, dicom_files

BRAIN = "brain-gwr"


@pytest.fixture(scope="module")
def head_summary() -> SeriesSummary:
    files = dicom_files(case_path("head-ct-cranium-axial"))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    return summarize_series(headers)


def routed(summary: SeriesSummary, protocol: str | None = BRAIN) -> SeriesCandidate:
    reason = f"routed to {protocol}" if protocol else "ignored by rule 'x': not analysed"
    return SeriesCandidate(summary, RoutingDecision(protocol, "rule", reason))


def variant(summary: SeriesSummary, number: int, **changes: object) -> SeriesSummary:
    return dataclasses.replace(
        summary, series_instance_uid=f"{summary.series_instance_uid}.{number}",
        series_number=number, **changes,  # type: ignore[arg-type]
    )


def brain_prefs() -> dict[str, SeriesPreferences]:
    return {BRAIN: preferences_for(BRAIN, get_protocol(BRAIN).series_preferences)}


def test_summary_of_real_headers(head_summary: SeriesSummary) -> None:
    assert head_summary.series_instance_uid.startswith("1.2.")
    assert head_summary.series_number is not None
    assert head_summary.orientation == "axial"
    assert head_summary.instances > 50
    # positions span the head: more than 10 cm, less than 40 cm
    assert head_summary.z_coverage_mm is not None and 100 < head_summary.z_coverage_mm < 400
    assert not head_summary.localizer and not head_summary.derived and not head_summary.ours


def test_thin_axial_soft_tissue_is_chosen_over_thick_bone_and_reformat(
    head_summary: SeriesSummary,
) -> None:
    thin = variant(head_summary, 2, kernel="H30s")
    thick = variant(
        head_summary, 3, kernel="H30s", slice_thickness_mm=5.0, instances=head_summary.instances // 2
    )
    bone = variant(head_summary, 4, kernel="H70h")
    coronal = variant(head_summary, 5, kernel="H30s", orientation="coronal")
    scout = variant(head_summary, 1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), instances=2)
    ours = variant(head_summary, 99, manufacturer="ainode")
    series = [thick, scout, bone, thin, coronal, ours]
    choices = select_series(
        [routed(s) for s in series[:5]] + [routed(ours, None)], brain_prefs()
    )
    by_number = {s.series_number: c for s, c in zip(series, choices, strict=True)}
    assert [c.series_instance_uid for c in choices] == [s.series_instance_uid for s in series]
    assert [n for n, c in by_number.items() if c.chosen] == [2]
    assert by_number[2].rank == 1 and by_number[2].reason.startswith(f"chosen for {BRAIN}: axial")
    assert "soft-tissue kernel" in by_number[2].reason
    assert "5 mm thick" in by_number[3].reason and "series 2" in by_number[3].reason
    assert "bone/lung kernel" in by_number[4].reason
    assert "coronal plane" in by_number[5].reason
    assert by_number[1].reason == f"skipped for {BRAIN}: localizer" and by_number[1].rank is None
    assert "ainode output" in by_number[99].reason and by_number[99].protocol is None
    assert sorted(c.rank for c in choices if c.rank) == [1, 2, 3, 4]


def test_more_images_then_series_number_break_ties(head_summary: SeriesSummary) -> None:
    short = variant(head_summary, 2, instances=40, z_coverage_mm=97.5)
    full = variant(head_summary, 7)
    twin = variant(head_summary, 8)
    choices = select_series([routed(short), routed(twin), routed(full)], brain_prefs())
    assert [c.chosen for c in choices] == [False, False, True]
    assert "40 image(s)" in choices[0].reason
    assert "Series Number" in choices[1].reason


def test_series_routed_nowhere_keep_their_routing_reason(head_summary: SeriesSummary) -> None:
    choices = select_series([routed(head_summary, None)], brain_prefs())
    assert not choices[0].chosen and choices[0].rank is None
    assert choices[0].reason == "skipped: ignored by rule 'x': not analysed"


def test_derived_secondary_ranks_last_or_is_excluded(head_summary: SeriesSummary) -> None:
    derived = variant(head_summary, 2, image_type=("DERIVED", "SECONDARY", "AXIAL"), instances=200)
    processed = variant(head_summary, 5, image_type=("DERIVED", "PRIMARY", "AXIAL"))
    original = variant(head_summary, 7, instances=head_summary.instances - 10)
    prefs = brain_prefs()
    choices = select_series([routed(derived), routed(processed), routed(original)], prefs)
    assert [c.rank for c in choices] == [3, 2, 1]
    assert "Image Type DERIVED\\SECONDARY; series 7 (ORIGINAL) preferred" in choices[0].reason
    # alone, a DERIVED\SECONDARY reconstruction is used (many CR and thick CT series are)
    (alone,) = select_series([routed(derived)], prefs)
    assert alone.chosen and "axial DERIVED\\SECONDARY" in alone.reason
    strict = {BRAIN: preferences_for(BRAIN, {}, {"exclude_derived": True})}
    (excluded,) = select_series([routed(derived)], strict)
    assert not excluded.chosen and excluded.reason.startswith(f"skipped for {BRAIN}: DERIVED/SECONDARY")


def test_contrast_and_coverage_preferences(head_summary: SeriesSummary) -> None:
    contrast = variant(head_summary, 2, contrast=True)
    plain = variant(head_summary, 3, instances=head_summary.instances - 1)
    choices = select_series([routed(contrast), routed(plain)], brain_prefs())
    assert choices[1].chosen and "with contrast agent" in choices[0].reason
    narrow = variant(head_summary, 4, z_coverage_mm=30.0)
    choices = select_series([routed(narrow), routed(plain)], brain_prefs())
    assert choices[1].chosen and "covers 30 mm (needs 80 mm)" in choices[0].reason


def test_radiograph_preferences_want_the_frontal_presentation_image(
    head_summary: SeriesSummary,
) -> None:
    rds = "neonatal-rds"
    prefs = {rds: preferences_for(rds, get_protocol(rds).series_preferences)}
    base = dataclasses.replace(
        head_summary, modality="DX", image_type=("ORIGINAL", "PRIMARY"), instances=1,
        orientation=None, slice_thickness_mm=None, z_coverage_mm=None, kernel="",
    )
    processing = variant(base, 1, presentation_intent="FOR PROCESSING", view_position="AP")
    lateral = variant(base, 2, presentation_intent="FOR PRESENTATION", view_position="LL")
    frontal = variant(base, 3, presentation_intent="FOR PRESENTATION", view_position="AP")
    choices = select_series(
        [routed(s, rds) for s in (processing, lateral, frontal)], prefs
    )
    assert [c.chosen for c in choices] == [False, False, True]
    assert "FOR PROCESSING" in choices[0].reason and "LL" in choices[1].reason


def test_every_shipped_protocol_has_valid_preferences() -> None:
    for name, spec in protocols().items():
        assert spec.series_preferences, name
        preferences_for(name, spec.series_preferences)


def test_invalid_preferences_are_refused() -> None:
    with pytest.raises(ValidationError, match="slice_thickness_mm"):
        SeriesPreferences(slice_thickness_mm=(3.0, 1.0))
    with pytest.raises(ValidationError, match="regular expression"):
        SeriesPreferences(preferred_kernel="(")
    with pytest.raises(ValidationError, match="Extra inputs"):
        preferences_for(BRAIN, {}, {"thickness": 1})


def test_exclusions_follow_the_preferences(head_summary: SeriesSummary) -> None:
    scout = variant(head_summary, 1, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    assert exclusion(scout) == "localizer"
    assert exclusion(scout, SeriesPreferences(exclude_localizers=False)) is None
