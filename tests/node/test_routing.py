"""Tests of the routing layer (node.routing) and the default routing table.

Real headers from pydicom-data (abdominal CT slice, CR chest PA, MR shoulder, SEG, Secondary
Capture), synthetic CT series (tests/pipelines/region_phantoms.py) for head/chest/abdomen, and
the pixel fallback through the real pixel classifier (no mocks).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pydicom
import pytest
from pydicom.dataset import Dataset

from node.routing import (
    RoutingDecision,
    RoutingRule,
    RuleMatch,
    default_rules,
    load_rules,
    route_series,
    summarize_series,
)
from pipelines.body_region import RegionGuess, guess_series_region
from pipelines.errors import RoutingError

PROTOCOLS = {"l3-body-composition", "chest-respiratory-muscle", "neonatal-rds", "brain-gwr"}


def _load_phantoms() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "pipelines" / "region_phantoms.py"
    spec = importlib.util.spec_from_file_location("region_phantoms", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("region_phantoms", module)
    spec.loader.exec_module(module)
    return module


rp = _load_phantoms()


def _data(name: str) -> Path:
    data_store = pytest.importorskip("data_store")
    return Path(os.path.dirname(data_store.__file__)) / "data" / name


def _headers(name: str) -> list[Dataset]:
    return [pydicom.dcmread(_data(name), stop_before_pixels=True)]


@pytest.fixture(scope="module")
def rules() -> list[RoutingRule]:
    return default_rules()


def _route(
    datasets: list[Dataset], rules: list[RoutingRule], *, pixels: bool = True
) -> RoutingDecision:
    callback: Callable[[], RegionGuess] | None = (
        (lambda: guess_series_region(datasets)) if pixels else None
    )
    return route_series(datasets, rules, pixel_region=callback)


# --- Default table -------------------------------------------------------------------------------


def test_default_rules_load_and_name_only_known_protocols(rules: list[RoutingRule]) -> None:
    assert len(rules) >= 20
    assert {r.protocol for r in rules if r.protocol is not None} == PROTOCOLS
    assert len({r.name for r in rules}) == len(rules)
    assert all(r.description for r in rules)
    # Ignore rules come before every protocol rule of the same kind: the first rule ignores ours.
    assert rules[0].protocol is None and "ainode" in rules[0].name


# --- Real headers --------------------------------------------------------------------------------


def test_real_abdominal_ct_slice_routes_to_l3(rules: list[RoutingRule]) -> None:
    headers = _headers("explicit_VR-UN.dcm")
    assert headers[0].BodyPartExamined == "PANCREAS"
    calls: list[int] = []

    def pixel_region() -> RegionGuess:
        calls.append(1)
        return RegionGuess(["head"], "must not be used", {})

    decision = route_series(headers, rules, pixel_region=pixel_region)
    assert decision.protocol == "l3-body-composition"
    assert decision.rule == "abdomen-ct-by-body-part"
    assert "abdominal CT" in decision.reason
    assert calls == []  # headers decided; pixels were never looked at


def test_real_cr_chest_pa_routes_to_neonatal_rds(rules: list[RoutingRule]) -> None:
    decision = route_series(_headers("RG1_UNCI.dcm"), rules)
    assert decision.protocol == "neonatal-rds"
    assert decision.rule == "chest-radiograph-by-body-part"


def test_real_mr_is_ignored_with_reason(rules: list[RoutingRule]) -> None:
    decision = route_series(_headers("MR2_UNCI.dcm"), rules)
    assert decision.protocol is None
    assert decision.rule is None
    assert decision.reason.startswith("no routing rule matched: Modality MR")
    # Study Description 'SHOULDER' is free text (may hold patient data, issue 14 item 5): the
    # reason says it is present but never quotes it.
    assert "Study Description (given)" in decision.reason
    assert "SHOULDER" not in decision.reason


def test_real_leg_radiograph_is_ignored(rules: list[RoutingRule]) -> None:
    decision = route_series(_headers("RG3_UNCI.dcm"), rules)
    assert decision.protocol is None
    assert "Body Part 'EXTREMITY'" in decision.reason


def test_structured_report_labelled_ct_is_not_routed(rules: list[RoutingRule]) -> None:
    """An SR whose Modality says CT (some archives do this) is never sent to a CT protocol."""
    header = _headers("explicit_VR-UN.dcm")[0]
    header.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    header.BodyPartExamined = "ABDOMEN"
    decision = route_series([header], rules)
    assert decision.protocol is None
    assert decision.rule == "non-image-sop-classes"


@pytest.mark.parametrize(
    ("name", "rule"),
    [("liver.dcm", "non-image-objects"), ("SC_rgb.dcm", "secondary-capture")],
)
def test_real_seg_and_secondary_capture_are_ignored(
    rules: list[RoutingRule], name: str, rule: str
) -> None:
    decision = route_series(_headers(name), rules)
    assert decision.protocol is None
    assert decision.rule == rule
    assert decision.reason.startswith(f"ignored by rule {rule!r}")


def test_real_enhanced_ct_perfusion_is_ignored(rules: list[RoutingRule]) -> None:
    decision = route_series(_headers("eCT_Supplemental.dcm"), rules)
    assert decision.rule == "ct-perfusion-maps"
    assert decision.protocol is None


# --- Synthetic headers ---------------------------------------------------------------------------


def test_head_ct_by_body_part(rules: list[RoutingRule]) -> None:
    decision = _route(rp.head_series(body_part="HEAD"), rules, pixels=False)
    assert (decision.protocol, decision.rule) == ("brain-gwr", "head-ct-by-body-part")


@pytest.mark.parametrize("description", ["CT Schädel nativ", "CCT", "CT KOPF", "Brain routine 5mm"])
def test_head_ct_by_description(rules: list[RoutingRule], description: str) -> None:
    decision = _route(rp.head_series(study_description=description), rules, pixels=False)
    assert (decision.protocol, decision.rule) == ("brain-gwr", "head-ct-by-description")


def test_contrast_head_ct_is_ignored(rules: list[RoutingRule]) -> None:
    decision = _route(rp.head_series(body_part="HEAD", contrast_agent="IOPROMIDE"), rules)
    assert decision.protocol is None
    assert decision.rule == "head-ct-contrast-by-body-part"
    assert "non-contrast" in decision.reason


def test_contrast_agent_none_counts_as_no_contrast(rules: list[RoutingRule]) -> None:
    decision = _route(rp.head_series(body_part="HEAD", contrast_agent="NONE"), rules)
    assert decision.protocol == "brain-gwr"


def test_head_cta_by_description_is_ignored(rules: list[RoutingRule]) -> None:
    decision = _route(rp.head_series(series_description="CTA Head 0.75"), rules, pixels=False)
    assert decision.protocol is None
    assert decision.rule == "head-ct-angio-perfusion-by-description"


# Lower case and over-long Body Part values are invalid CS, but PACS send them: read tolerantly.
@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
@pytest.mark.parametrize("body_part", ["CHEST", "thorax", "LUNG"])
def test_chest_ct_by_body_part(rules: list[RoutingRule], body_part: str) -> None:
    decision = _route(rp.chest_series(body_part=body_part), rules, pixels=False)
    assert (decision.protocol, decision.rule) == (
        "chest-respiratory-muscle",
        "chest-ct-by-body-part",
    )


def test_chest_ct_by_description(rules: list[RoutingRule]) -> None:
    decision = _route(rp.chest_series(series_description="Thorax 1.0 B70f"), rules, pixels=False)
    assert decision.protocol == "chest-respiratory-muscle"


def test_thoracic_spine_is_not_chest(rules: list[RoutingRule]) -> None:
    decision = _route(
        rp.chest_series(body_part="TSPINE", study_description="CT thoracic spine"),
        rules,
        pixels=False,
    )
    assert decision.protocol is None


@pytest.mark.filterwarnings("ignore:The value length")
@pytest.mark.parametrize(
    "body_part", ["ABDOMEN", "CHESTABDPELVIS", "CHEST_ABDOMEN_PELVIS", "LIVER"]
)
def test_abdomen_ct_by_body_part(rules: list[RoutingRule], body_part: str) -> None:
    decision = _route(rp.abdomen_series(body_part=body_part), rules, pixels=False)
    assert decision.protocol == "l3-body-composition"


def test_chest_abdomen_pelvis_description_goes_to_l3(rules: list[RoutingRule]) -> None:
    decision = _route(
        rp.abdomen_series(study_description="CT Chest/Abdomen/Pelvis w contrast"),
        rules,
        pixels=False,
    )
    assert (decision.protocol, decision.rule) == (
        "l3-body-composition",
        "abdomen-ct-by-description",
    )


def test_localizer_image_type_is_ignored(rules: list[RoutingRule]) -> None:
    series = rp.chest_series(body_part="CHEST")
    for ds in series:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    decision = _route(series, rules)
    assert (decision.protocol, decision.rule) == (None, "localizer-by-image-type")


def test_localizer_by_description_is_ignored(rules: list[RoutingRule]) -> None:
    decision = _route(
        rp.chest_series(body_part="CHEST", series_description="Topogram 0.6 T20s"), rules
    )
    assert (decision.protocol, decision.rule) == (None, "localizer-by-description")


def test_one_localizer_in_an_axial_series_does_not_ignore_it(rules: list[RoutingRule]) -> None:
    series = rp.chest_series(body_part="CHEST")
    series[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    decision = _route(series, rules)
    assert decision.protocol == "chest-respiratory-muscle"


def test_coronal_reformat_is_ignored(rules: list[RoutingRule]) -> None:
    series = rp.abdomen_series(body_part="ABDOMEN", image_orientation=(1, 0, 0, 0, 0, -1))
    decision = _route(series, rules, pixels=False)
    assert (decision.protocol, decision.rule) == (None, "ct-non-axial-reformat")


@pytest.mark.parametrize(
    ("attribute", "value", "rule"),
    [
        ("SeriesDescription", "ainode L3 body composition", "ainode-output-by-series-description"),
        ("Manufacturer", "ainode", "ainode-output-by-manufacturer"),
    ],
)
def test_own_outputs_are_never_routed(
    rules: list[RoutingRule], attribute: str, value: str, rule: str
) -> None:
    series = rp.abdomen_series(body_part="ABDOMEN")
    for ds in series:
        setattr(ds, attribute, value)
    decision = _route(series, rules)
    assert (decision.protocol, decision.rule) == (None, rule)
    assert "our own output" in decision.reason


# --- Pixel fallback ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_series", "protocol", "rule", "region"),
    [
        (rp.head_series, "brain-gwr", "pixel-head-ct", "head"),
        (rp.chest_series, "chest-respiratory-muscle", "pixel-chest-ct", "chest"),
        (rp.abdomen_series, "l3-body-composition", "pixel-abdomen-ct", "abdomen"),
    ],
)
def test_pixel_fallback_picks_protocol(
    rules: list[RoutingRule],
    make_series: Callable[..., list[Dataset]],
    protocol: str,
    rule: str,
    region: str,
) -> None:
    series = make_series()  # no Body Part Examined, empty descriptions
    assert "BodyPartExamined" not in series[0] and series[0].StudyDescription == ""
    calls: list[int] = []

    def pixel_region() -> RegionGuess:
        calls.append(1)
        return guess_series_region(series)

    decision = route_series(series, rules, pixel_region=pixel_region)
    assert (decision.protocol, decision.rule) == (protocol, rule)
    assert f"CT pixels: {region} in 6 of 6 slice(s)" in decision.reason
    assert calls == [1]  # evaluated once, although several pixel rules were tried


def test_pixel_fallback_head_with_contrast_is_ignored(rules: list[RoutingRule]) -> None:
    decision = _route(rp.head_series(contrast_agent="OMNIPAQUE"), rules)
    assert (decision.protocol, decision.rule) == (None, "pixel-head-ct-contrast")


def test_pixel_fallback_with_unknown_body_part_value(rules: list[RoutingRule]) -> None:
    decision = _route(rp.chest_series(body_part="UNKNOWN"), rules)
    assert decision.rule == "pixel-chest-ct"


def test_without_pixel_classifier_fallback_does_not_fire(rules: list[RoutingRule]) -> None:
    decision = _route(rp.chest_series(), rules, pixels=False)
    assert decision.protocol is None
    assert decision.reason.startswith("no routing rule matched: Modality CT")
    assert any("no pixel classifier available" in line for line in decision.checks)


def test_pixel_classifier_error_is_recorded(rules: list[RoutingRule]) -> None:
    from pipelines.errors import InvalidSeriesError

    def broken() -> RegionGuess:
        raise InvalidSeriesError("the series is empty")

    decision = route_series(rp.chest_series(), rules, pixel_region=broken)
    assert decision.protocol is None
    assert any("pixel classifier failed: the series is empty" in line for line in decision.checks)


def test_real_ct_slice_pixels_without_headers_route_to_l3(rules: list[RoutingRule]) -> None:
    ds = pydicom.dcmread(_data("explicit_VR-UN.dcm"))
    del ds.BodyPartExamined
    ds.StudyDescription = ""
    ds.SeriesDescription = ""
    decision = _route([ds], rules)
    assert (decision.protocol, decision.rule) == ("l3-body-composition", "pixel-abdomen-ct")
    assert "CT pixels: abdomen in 1 of 1 slice(s)" in decision.reason


def test_real_cr_chest_pixels_without_headers_route_to_rds(rules: list[RoutingRule]) -> None:
    ds = pydicom.dcmread(_data("RG1_UNCI.dcm"))
    del ds.BodyPartExamined
    ds.StudyDescription = ""
    decision = _route([ds], rules)
    assert (decision.protocol, decision.rule) == ("neonatal-rds", "pixel-chest-radiograph")
    assert "two large dark fields" in decision.reason


def test_real_leg_radiograph_pixels_without_headers_are_ignored(rules: list[RoutingRule]) -> None:
    ds = pydicom.dcmread(_data("RG3_UNCI.dcm"))
    del ds.BodyPartExamined
    ds.StudyDescription = ""
    decision = _route([ds], rules)
    assert decision.protocol is None
    assert "radiograph pixels: no pair of large dark fields" in decision.reason


# --- checks --------------------------------------------------------------------------------------


def test_checks_explain_every_rule(rules: list[RoutingRule]) -> None:
    decision = route_series(_headers("explicit_VR-UN.dcm"), rules)
    assert len(decision.checks) == len(rules)
    winner = [r.name for r in rules].index("abdomen-ct-by-body-part")
    for rule, line in zip(rules[:winner], decision.checks[:winner], strict=True):
        assert line.startswith(f"rule {rule.name!r}: no - ")
    assert decision.checks[winner].startswith(
        "rule 'abdomen-ct-by-body-part': MATCH -> l3-body-composition"
    )
    assert "Body Part Examined 'PANCREAS' matches" in decision.checks[winner]
    assert all("not evaluated" in line for line in decision.checks[winner + 1 :])
    by_name = dict(zip([r.name for r in rules], decision.checks, strict=True))
    assert "Modality CT not in" in by_name["non-image-objects"]
    assert (
        "Image Type ORIGINAL\\PRIMARY\\AXIAL lacks ['LOCALIZER']"
        in by_name["localizer-by-image-type"]
    )
    assert "Body Part Examined 'PANCREAS' does not match" in by_name["head-ct-by-body-part"]


def test_ignore_decision_reason_names_rule_and_why() -> None:
    rule = RoutingRule(
        name="skip-mr",
        protocol=None,
        match=RuleMatch(modality=["MR"]),
        description="MR is not analysed here",
    )
    decision = route_series(_headers("MR2_UNCI.dcm"), [rule])
    assert decision == RoutingDecision(
        None,
        "skip-mr",
        "ignored by rule 'skip-mr': MR is not analysed here",
        ["rule 'skip-mr': MATCH -> ignore (Modality MR in ['MR'])"],
    )


def test_empty_series_is_ignored(rules: list[RoutingRule]) -> None:
    decision = route_series([], rules)
    assert decision.protocol is None and "empty series" in decision.reason


# --- Conditions ----------------------------------------------------------------------------------


def _one(match: dict[str, object]) -> list[RoutingRule]:
    return load_rules([{"name": "r", "protocol": "p", "match": match}])


def test_summary_aggregates_series() -> None:
    series = rp.chest_series(body_part="CHEST")
    series[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    series[0].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    for thickness, ds in zip([1.0, 1.0, 5.0, 5.0, 5.0, 10.0], series, strict=True):
        ds.SliceThickness = thickness
    summary = summarize_series(series)
    assert summary.modality == "CT"
    assert summary.instances == 6
    assert summary.slice_thickness_mm == 5.0
    assert summary.orientation == "axial"
    assert summary.image_type == ("ORIGINAL", "PRIMARY", "AXIAL")
    assert summary.contrast is False


@pytest.mark.parametrize(
    ("match", "fires"),
    [
        ({"min_slice_thickness_mm": 5.0, "max_slice_thickness_mm": 5.0}, True),
        ({"max_slice_thickness_mm": 3.0}, False),
        ({"min_instances": 6, "max_instances": 6}, True),
        ({"min_instances": 7}, False),
        ({"orientation": ["axial"]}, True),
        ({"orientation": ["sagittal"]}, False),
        ({"image_type_excludes": ["LOCALIZER"]}, True),
        ({"image_type_contains": ["ORIGINAL", "AXIAL"]}, True),
        ({"image_type_contains": ["DERIVED"]}, False),
        ({"sop_class_uid": ["1.2.840.10008.5.1.4.1.1.2"]}, True),
        ({"protocol_name": "^$"}, True),
        ({"study_description": "chest"}, False),
        ({"contrast": False}, True),
        ({"contrast": True}, False),
        ({"view_position": ["PA"]}, False),
    ],
)
def test_each_condition(match: dict[str, object], fires: bool) -> None:
    decision = route_series(rp.chest_series(), _one(match))
    assert (decision.protocol == "p") is fires


@pytest.mark.parametrize(
    ("age", "fires"), [("003D", True), ("002W", True), ("045Y", False), (None, False)]
)
def test_patient_age_condition(age: str | None, fires: bool) -> None:
    series = rp.chest_series()
    for ds in series:
        if age is not None:
            ds.PatientAge = age
    decision = route_series(series, _one({"max_patient_age_days": 28}))
    assert (decision.protocol == "p") is fires
    if age is None:
        assert "patient age unknown" in decision.checks[0]


# --- Loading and validation ----------------------------------------------------------------------


def test_invalid_regex_raises_routing_error_naming_rule() -> None:
    with pytest.raises(
        RoutingError, match=r"rule 1 \('bad-head'\).*body_part_examined.*invalid regular"
    ):
        load_rules(
            [
                {
                    "name": "bad-head",
                    "protocol": "brain-gwr",
                    "match": {"body_part_examined": "^(HEAD"},
                }
            ]
        )


def test_unknown_condition_raises_routing_error() -> None:
    with pytest.raises(RoutingError, match=r"'typo'.*body_part"):
        load_rules([{"name": "typo", "protocol": "x", "match": {"body_part": "HEAD"}}])


def test_min_greater_than_max_raises() -> None:
    with pytest.raises(RoutingError, match="min_instances"):
        load_rules(
            [{"name": "r", "protocol": "x", "match": {"min_instances": 5, "max_instances": 2}}]
        )


def test_duplicate_names_raise() -> None:
    rule: dict[str, object] = {"name": "same", "protocol": None, "match": {}}
    with pytest.raises(RoutingError, match="duplicate rule name 'same'"):
        load_rules([rule, rule])


def test_unknown_protocol_raises_when_protocols_known() -> None:
    with pytest.raises(RoutingError, match="unknown protocol 'brain-gwr-v2'"):
        load_rules(
            [{"name": "r", "protocol": "brain-gwr-v2", "match": {}}], known_protocols=PROTOCOLS
        )


def test_load_rules_from_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "rules:\n"
        "  - name: mr-knee\n"
        "    protocol: null\n"
        "    match:\n"
        "      modality: [MR]\n"
        "      study_description: '^should'\n",
        encoding="utf-8",
    )
    rules = load_rules(path)
    assert [r.name for r in rules] == ["mr-knee"]
    assert route_series(_headers("MR2_UNCI.dcm"), rules).rule == "mr-knee"


def test_load_rules_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(RoutingError, match="invalid YAML"):
        load_rules(path)
    path.write_text("just text\n", encoding="utf-8")
    with pytest.raises(RoutingError, match="expected a list of rules"):
        load_rules(path)
    with pytest.raises(RoutingError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
