"""Routing: which protocol a received series goes to, and why.

A routing table is an ordered list of :class:`RoutingRule`. Each rule has conditions
(:class:`RuleMatch`) on the headers of one series; every condition given must hold. The **first**
rule whose conditions all hold decides: it names a protocol, or ``protocol: null`` to ignore the
series on purpose (localizers, our own outputs...). When no rule matches, the series is ignored
and the reason names what was seen.

Conditions are evaluated on values aggregated over the instances of the series (see
:class:`SeriesSummary`). The optional ``pixel_region`` condition looks at the image content through
a callback (:func:`pipelines.body_region.guess_series_region`); it is evaluated lazily, at most
once per series, and only when a rule whose header conditions all hold needs it.

The rule format, every default rule and the pixel fallback are documented in ``docs/routing.md``.
This module imports neither torch nor MONAI, and loads no pixel data itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import statistics
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from pipelines.acquisition import contrast_recorded
from ainode_core.errors import AINodeError, RoutingError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from pipelines.body_region import RegionGuess

logger = logging.getLogger(__name__)

Orientation = Literal["axial", "coronal", "sagittal", "oblique"]

#: Name of the default routing table shipped with the package.
DEFAULT_ROUTING_FILE = "default_routing.yaml"

#: Largest angle (degrees) between the slice normal and a patient axis for a series to count as
#: axial, coronal or sagittal; beyond it the series is "oblique". 35 degrees keeps head CT with
#: a gantry tilt encoded in Image Orientation (Patient) (typically up to 30 degrees) axial.
MAX_PLANE_ANGLE_DEG = 35.0


_REGEX_FIELDS = (
    "body_part_examined",
    "study_description",
    "series_description",
    "protocol_name",
    "any_description",
    "manufacturer",
)


class RuleMatch(BaseModel):
    """Conditions of a routing rule; all given conditions must hold, omitted ones are ignored.

    Regular expressions use Python syntax, are case-insensitive and are searched anywhere in the
    value (``re.search``): anchor them (``^...$``) for exact matches. A missing attribute is
    matched as the empty string, so ``'^$'`` matches "absent or empty". List conditions on
    codes (``modality``, ``sop_class_uid``, ``view_position``, ``orientation``, ``pixel_region``)
    hold when the series value is any of the listed values.
    """

    model_config = ConfigDict(extra="forbid")

    modality: list[str] | None = Field(
        default=None,
        description="Modality (0008,0060) of the series is one of these (e.g. CT, CR, DX).",
    )
    sop_class_uid: list[str] | None = Field(
        default=None, description="SOP Class UID (0008,0016) of the series is one of these."
    )
    body_part_examined: str | None = Field(
        default=None, description="Regex matched against Body Part Examined (0018,0015)."
    )
    study_description: str | None = Field(
        default=None, description="Regex matched against Study Description (0008,1030)."
    )
    series_description: str | None = Field(
        default=None, description="Regex matched against Series Description (0008,103E)."
    )
    protocol_name: str | None = Field(
        default=None, description="Regex matched against Protocol Name (0018,1030)."
    )
    any_description: str | None = Field(
        default=None,
        description="Regex that must match at least one of Study Description, Series "
        "Description and Protocol Name.",
    )
    manufacturer: str | None = Field(
        default=None, description="Regex matched against Manufacturer (0008,0070)."
    )
    image_type_contains: list[str] | None = Field(
        default=None,
        description="Image Type (0008,0008) of the series contains every one of these values.",
    )
    image_type_excludes: list[str] | None = Field(
        default=None,
        description="Image Type (0008,0008) of the series contains none of these values.",
    )
    min_slice_thickness_mm: float | None = Field(
        default=None, description="Median Slice Thickness (0018,0050) is at least this (mm)."
    )
    max_slice_thickness_mm: float | None = Field(
        default=None, description="Median Slice Thickness (0018,0050) is at most this (mm)."
    )
    min_instances: int | None = Field(
        default=None, description="The series has at least this many images (frames counted)."
    )
    max_instances: int | None = Field(
        default=None, description="The series has at most this many images (frames counted)."
    )
    orientation: list[Orientation] | None = Field(
        default=None,
        description="Plane of the majority of images, from Image Orientation (Patient) "
        "(0020,0037).",
    )
    contrast: bool | None = Field(
        default=None,
        description="true: Contrast/Bolus Agent (0018,0010) is present and not 'NONE'; "
        "false: it is absent, empty or 'NONE'.",
    )
    view_position: list[str] | None = Field(
        default=None, description="View Position (0018,5101) is one of these (e.g. PA, AP, LL)."
    )
    min_patient_age_days: float | None = Field(
        default=None, description="Patient Age (0010,1010) is at least this many days."
    )
    max_patient_age_days: float | None = Field(
        default=None,
        description="Patient Age (0010,1010) is at most this many days (e.g. 28 for neonates).",
    )
    pixel_region: list[Literal["head", "chest", "abdomen", "pelvis", "unknown"]] | None = Field(
        default=None,
        description="The pixel classifier found at least one of these regions; evaluated last "
        "and only when needed (loads pixel data).",
    )

    _patterns: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _compile(self) -> RuleMatch:
        patterns: dict[str, re.Pattern[str]] = {}
        for name in _REGEX_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            try:
                patterns[name] = re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"{name}: invalid regular expression {value!r} ({exc})") from exc
        for low, high in (
            ("min_slice_thickness_mm", "max_slice_thickness_mm"),
            ("min_instances", "max_instances"),
            ("min_patient_age_days", "max_patient_age_days"),
        ):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value > high_value:
                raise ValueError(f"{low} ({low_value}) is greater than {high} ({high_value})")
        self._patterns = patterns
        return self

    def pattern(self, name: str) -> re.Pattern[str]:
        """The compiled, case-insensitive regex of condition ``name``."""
        return self._patterns[name]


class RoutingRule(BaseModel):
    """One routing rule: if every condition of ``match`` holds, send the series to ``protocol``.

    ``protocol: null`` ignores the series on purpose; ``description`` says why and appears in
    the routing decision.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Unique name, shown in routing decisions.")
    protocol: str | None = Field(
        ..., description="Protocol to run (e.g. l3-body-composition), or null to ignore."
    )
    match: RuleMatch = Field(
        default_factory=lambda: RuleMatch(), description="Conditions; all must hold."
    )
    description: str = Field(default="", description="Why the rule exists; shown in the decision.")
    priority: Literal["urgent", "routine", "low"] = Field(
        default="routine",
        description="Scheduling priority of the jobs this rule queues (urgent jobs are claimed first).",
    )


@dataclass(frozen=True)
class RoutingDecision:
    """The outcome of routing one series.

    Attributes
    ----------
    protocol:
        Protocol to run, or ``None`` when the series is ignored.
    rule:
        Name of the rule that decided, or ``None`` when no rule matched.
    reason:
        One sentence for the job log and the admin.
    checks:
        One line per rule, in order, saying why it did or did not fire (``ainode route``
        prints these).
    priority:
        The deciding rule's scheduling priority (``urgent``, ``routine``, ``low``).
    """

    protocol: str | None
    rule: str | None
    reason: str
    checks: list[str] = field(default_factory=list)
    priority: str = "routine"


@dataclass(frozen=True)
class SeriesSummary:
    """Header values of one series, aggregated over its instances, as rules see them.

    Strings are the most common non-empty value over the instances ("" when absent); the
    Image Type is the most common one (so one localizer in an axial series does not make the
    series a localizer); the slice thickness is the median; the orientation is the plane of the
    majority of images; ``contrast`` is true when any instance names a contrast agent.
    """

    modality: str
    sop_class_uid: str
    body_part_examined: str
    study_description: str
    series_description: str
    protocol_name: str
    manufacturer: str
    image_type: tuple[str, ...]
    slice_thickness_mm: float | None
    instances: int
    orientation: str | None
    contrast: bool
    view_position: str
    patient_age_days: float | None
    #: Series Instance UID (0020,000E); "" when the headers lack it.
    series_instance_uid: str = ""
    #: Series Number (0020,0011), or ``None``.
    series_number: int | None = None
    #: Convolution Kernel (0018,1210), multiple values joined by ``\\`` ("" when absent).
    kernel: str = ""
    #: Extent of the image positions along the slice normal (mm): the distance between the
    #: first and the last slice centre, from Image Position (Patient) (0020,0032); ``None``
    #: with fewer than two positioned images.
    z_coverage_mm: float | None = None
    #: Presentation Intent Type (0008,0068) of DX/CR/MG images ("FOR PRESENTATION" or
    #: "FOR PROCESSING"; "" when absent).
    presentation_intent: str = ""

    @property
    def localizer(self) -> bool:
        """Image Type names a LOCALIZER (a scout / topogram)."""
        return "LOCALIZER" in self.image_type

    @property
    def derived(self) -> bool:
        """Image Type value 1 is DERIVED or value 2 is SECONDARY (PS3.3 C.7.6.1.1.2)."""
        return bool(self.image_type) and (
            self.image_type[0] == "DERIVED"
            or (len(self.image_type) > 1 and self.image_type[1] == "SECONDARY")
        )

    @property
    def ours(self) -> bool:
        """An object ainode wrote (Manufacturer ``ainode``, or a Series Description starting
        with ``ainode``)."""
        return (
            self.manufacturer.strip().lower() == "ainode"
            or self.series_description.strip().lower().startswith("ainode")
        )

    def describe(self) -> str:
        """What was seen, for messages and logs.

        Free-text values (Study and Series Description, Protocol Name) may hold patient data
        and are never quoted: only whether they are present (issue 14). Coded values (Modality,
        Body Part Examined, Image Type, View Position) are shown.
        """

        def quoted(value: str) -> str:
            return repr(value) if value else "(none)"

        parts = [
            f"Modality {self.modality or '(none)'}",
            f"Body Part {quoted(self.body_part_examined)}",
            f"Study Description {_presence(self.study_description)}",
            f"Series Description {_presence(self.series_description)}",
        ]
        if self.protocol_name:
            parts.append("Protocol Name (given)")
        if self.image_type:
            parts.append("Image Type " + "\\".join(self.image_type))
        if self.orientation:
            parts.append(f"{self.orientation} orientation")
        if self.view_position:
            parts.append(f"View Position {self.view_position}")
        parts.append(f"{self.instances} image(s)")
        return ", ".join(parts)


# --- Aggregation ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _majority(values: Iterable[str]) -> str:
    counts = Counter(v for v in values if v)
    return counts.most_common(1)[0][0] if counts else ""


def _functional_group_item(ds: Dataset, sequence: str, attribute: str) -> Any:
    """Attribute from the shared (else first per-frame) functional groups of a multi-frame image."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups)
        if not items:
            continue
        inner = items[0].get(sequence)
        if inner and attribute in inner[0]:
            return inner[0].get(attribute)
    return None


def _plane(ds: Dataset) -> str | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        iop = _functional_group_item(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    try:
        values = [float(v) for v in iop] if iop is not None else []
    except (TypeError, ValueError):
        return None
    if len(values) != 6:
        return None
    row, column = values[:3], values[3:]
    normal = (
        row[1] * column[2] - row[2] * column[1],
        row[2] * column[0] - row[0] * column[2],
        row[0] * column[1] - row[1] * column[0],
    )
    length = sum(c * c for c in normal) ** 0.5
    if length < 1e-6:
        return None
    components = [abs(c) / length for c in normal]
    largest = max(range(3), key=lambda i: components[i])
    if components[largest] < math.cos(math.radians(MAX_PLANE_ANGLE_DEG)):
        return "oblique"
    # LPS: x (patient left) normal = sagittal, y (posterior) = coronal, z (head) = axial.
    return ("sagittal", "coronal", "axial")[largest]


def _slice_thickness_mm(ds: Dataset) -> float | None:
    value = ds.get("SliceThickness")
    if value in (None, ""):
        value = _functional_group_item(ds, "PixelMeasuresSequence", "SliceThickness")
    try:
        thickness = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return thickness if thickness is not None and thickness > 0 else None


_AGE_UNIT_DAYS = {"D": 1.0, "W": 7.0, "M": 30.4375, "Y": 365.25}


def _patient_age_days(ds: Dataset) -> float | None:
    """Patient Age (0010,1010), AS value representation ``nnnD/W/M/Y`` (PS3.5 Table 6.2-1);
    else the difference between Study Date and Patient's Birth Date."""
    age = _text(ds.get("PatientAge")).upper()
    match = re.fullmatch(r"(\d{1,3})\s*([DWMY])", age)
    if match:
        return int(match.group(1)) * _AGE_UNIT_DAYS[match.group(2)]
    birth, study = _text(ds.get("PatientBirthDate")), _text(ds.get("StudyDate"))
    try:
        born = dt.datetime.strptime(birth[:8], "%Y%m%d").date()
        seen = dt.datetime.strptime(study[:8], "%Y%m%d").date()
    except ValueError:
        return None
    return float((seen - born).days)


def _z_coverage_mm(headers: Sequence[Dataset]) -> float | None:
    """Distance (mm) between the extreme slice centres along the majority slice normal."""
    normals: Counter[tuple[float, float, float]] = Counter()
    for ds in headers:
        iop = ds.get("ImageOrientationPatient")
        try:
            values = [float(v) for v in iop] if iop is not None else []
        except (TypeError, ValueError):
            continue
        if len(values) != 6:
            continue
        r, c = values[:3], values[3:]
        normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
        normals[(round(normal[0], 3), round(normal[1], 3), round(normal[2], 3))] += 1
    if not normals:
        return None
    normal = normals.most_common(1)[0][0]
    positions: list[float] = []
    for ds in headers:
        ipp = ds.get("ImagePositionPatient")
        try:
            point = [float(v) for v in ipp] if ipp is not None else []
        except (TypeError, ValueError):
            continue
        if len(point) == 3:
            positions.append(sum(p * n for p, n in zip(point, normal, strict=True)))
    if len(positions) < 2:
        return None
    return round(max(positions) - min(positions), 2)


def _series_number(headers: Sequence[Dataset]) -> int | None:
    numbers: Counter[int] = Counter()
    for ds in headers:
        try:
            numbers[int(ds.get("SeriesNumber"))] += 1
        except (TypeError, ValueError):
            continue
    return numbers.most_common(1)[0][0] if numbers else None


def summarize_series(headers: Sequence[Dataset]) -> SeriesSummary:
    """Aggregate the headers of one series into the values routing rules test.

    Parameters
    ----------
    headers:
        The instances of one series; pixel data is not needed.

    Returns
    -------
    SeriesSummary
        See its docstring for how each value is aggregated.
    """
    images = 0
    for ds in headers:
        try:
            images += max(1, int(ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            images += 1
    thicknesses = [t for t in (_slice_thickness_mm(ds) for ds in headers) if t is not None]
    image_types = Counter(
        tuple(v.strip().upper() for v in _text(ds.get("ImageType")).split("\\") if v.strip())
        for ds in headers
    )
    image_types.pop((), None)
    ages = [a for a in (_patient_age_days(ds) for ds in headers) if a is not None]
    return SeriesSummary(
        modality=_majority(_text(ds.get("Modality")).upper() for ds in headers),
        sop_class_uid=_majority(_text(ds.get("SOPClassUID")) for ds in headers),
        body_part_examined=_majority(_text(ds.get("BodyPartExamined")) for ds in headers),
        study_description=_majority(_text(ds.get("StudyDescription")) for ds in headers),
        series_description=_majority(_text(ds.get("SeriesDescription")) for ds in headers),
        protocol_name=_majority(_text(ds.get("ProtocolName")) for ds in headers),
        manufacturer=_majority(_text(ds.get("Manufacturer")) for ds in headers),
        image_type=image_types.most_common(1)[0][0] if image_types else (),
        slice_thickness_mm=statistics.median(thicknesses) if thicknesses else None,
        instances=images,
        orientation=_majority(p or "" for p in (_plane(ds) for ds in headers)) or None,
        contrast=any(contrast_recorded(ds) for ds in headers),
        view_position=_majority(_text(ds.get("ViewPosition")).upper() for ds in headers),
        patient_age_days=ages[0] if ages else None,
        series_instance_uid=_majority(_text(ds.get("SeriesInstanceUID")) for ds in headers),
        series_number=_series_number(headers),
        kernel=_majority(_text(ds.get("ConvolutionKernel")) for ds in headers),
        z_coverage_mm=_z_coverage_mm(headers),
        presentation_intent=_majority(
            _text(ds.get("PresentationIntentType")).upper() for ds in headers
        ),
    )


# --- Evaluation ----------------------------------------------------------------------------------


class _LazyRegion:
    """Calls the pixel classifier at most once, and never when no rule needs it."""

    def __init__(self, callback: Callable[[], RegionGuess] | None) -> None:
        self._callback = callback
        self._done = False
        self.guess: RegionGuess | None = None
        self.error: str | None = None

    def get(self) -> RegionGuess | None:
        if not self._done:
            self._done = True
            if self._callback is None:
                self.error = "no pixel classifier available (headers only)"
            else:
                try:
                    self.guess = self._callback()
                except AINodeError as exc:
                    self.error = f"pixel classifier failed: {exc}"
                    logger.warning("routing: %s", self.error)
        return self.guess


_REGEX_LABELS = {
    "body_part_examined": "Body Part Examined",
    "study_description": "Study Description",
    "series_description": "Series Description",
    "protocol_name": "Protocol Name",
    "manufacturer": "Manufacturer",
}


#: Attributes whose values are free text (may hold names or other patient data): routing
#: reasons, checks and log lines say whether a rule's pattern matched, never the value.
_FREE_TEXT = frozenset({"study_description", "series_description", "protocol_name"})


def _shown(value: str) -> str:
    return repr(value) if value else "(missing)"


def _presence(value: str) -> str:
    """``(given)`` or ``(none)``: a free-text value is never quoted."""
    return "(given)" if value else "(none)"


def _evaluate(
    match: RuleMatch, summary: SeriesSummary, region: _LazyRegion
) -> tuple[bool, list[str]]:
    """Evaluate the conditions in order; stop at the first that fails.

    Returns whether all hold and one line per condition evaluated (the last one explains a
    failure)."""
    notes: list[str] = []

    def check(ok: bool, text: str) -> bool:
        notes.append(text)
        return ok

    def in_list(label: str, value: str, allowed: list[str]) -> bool:
        upper = [a.strip().upper() for a in allowed]
        ok = value.upper() in upper
        shown = value or "(missing)"
        return check(ok, f"{label} {shown} {'in' if ok else 'not in'} {allowed}")

    if match.modality is not None and not in_list("Modality", summary.modality, match.modality):
        return False, notes
    if match.sop_class_uid is not None:
        ok = summary.sop_class_uid in [u.strip() for u in match.sop_class_uid]
        verb = "in" if ok else "not in"
        if not check(ok, f"SOP Class UID {summary.sop_class_uid or '(missing)'} {verb} the list"):
            return False, notes
    for name, label in _REGEX_LABELS.items():
        if getattr(match, name) is None:
            continue
        value = getattr(summary, name)
        ok = match.pattern(name).search(value) is not None
        verb = "matches" if ok else "does not match"
        if name in _FREE_TEXT:
            shown = label if value else f"{label} (missing)"
        else:
            shown = f"{label} {_shown(value)}"
        if not check(ok, f"{shown} {verb} the rule's pattern '{getattr(match, name)}'"
                     if name in _FREE_TEXT else f"{shown} {verb} '{getattr(match, name)}'"):
            return False, notes
    if match.any_description is not None:
        pattern = match.pattern("any_description")
        values = {
            "Study Description": summary.study_description,
            "Series Description": summary.series_description,
            "Protocol Name": summary.protocol_name,
        }
        hits = [label for label, value in values.items() if pattern.search(value)]
        seen = ", ".join(f"{label} {_presence(value)}" for label, value in values.items())
        text = (
            f"{' and '.join(hits)} match '{match.any_description}'"
            if hits
            else f"no description matches '{match.any_description}' ({seen})"
        )
        if not check(bool(hits), text):
            return False, notes
    image_type = set(summary.image_type)
    shown_type = "\\".join(summary.image_type) or "(missing)"
    if match.image_type_contains is not None:
        wanted = [v.strip().upper() for v in match.image_type_contains]
        missing = [v for v in wanted if v not in image_type]
        text = (
            f"Image Type {shown_type} contains {wanted}"
            if not missing
            else f"Image Type {shown_type} lacks {missing}"
        )
        if not check(not missing, text):
            return False, notes
    if match.image_type_excludes is not None:
        present = [
            v for v in (v.strip().upper() for v in match.image_type_excludes) if v in image_type
        ]
        text = (
            f"Image Type {shown_type} contains excluded {present}"
            if present
            else f"Image Type {shown_type} has none of {match.image_type_excludes}"
        )
        if not check(not present, text):
            return False, notes
    thickness = summary.slice_thickness_mm
    for bound, limit in (
        ("min", match.min_slice_thickness_mm),
        ("max", match.max_slice_thickness_mm),
    ):
        if limit is None:
            continue
        if thickness is None:
            return check(False, f"Slice Thickness missing ({bound} {limit} mm required)"), notes
        ok = thickness >= limit if bound == "min" else thickness <= limit
        sign = ">=" if bound == "min" else "<="
        if not check(
            ok,
            f"median Slice Thickness {thickness:g} mm {sign if ok else 'not ' + sign} {limit:g} mm",
        ):
            return False, notes
    for bound, limit in (("min", match.min_instances), ("max", match.max_instances)):
        if limit is None:
            continue
        ok = summary.instances >= limit if bound == "min" else summary.instances <= limit
        sign = ">=" if bound == "min" else "<="
        if not check(ok, f"{summary.instances} image(s) {sign if ok else 'not ' + sign} {limit}"):
            return False, notes
    if match.orientation is not None:
        ok = summary.orientation in match.orientation
        shown = summary.orientation or "unknown (no Image Orientation (Patient))"
        if not check(ok, f"orientation {shown} {'in' if ok else 'not in'} {match.orientation}"):
            return False, notes
    if match.contrast is not None:
        ok = summary.contrast == match.contrast
        state = "contrast agent tagged" if summary.contrast else "no contrast agent tagged"
        if not check(ok, f"{state} (rule wants contrast={str(match.contrast).lower()})"):
            return False, notes
    if match.view_position is not None and not in_list(
        "View Position", summary.view_position, match.view_position
    ):
        return False, notes
    age = summary.patient_age_days
    for bound, limit in (("min", match.min_patient_age_days), ("max", match.max_patient_age_days)):
        if limit is None:
            continue
        if age is None:
            return check(False, f"patient age unknown ({bound} {limit:g} days required)"), notes
        ok = age >= limit if bound == "min" else age <= limit
        sign = ">=" if bound == "min" else "<="
        if not check(ok, f"patient age {age:g} days {sign if ok else 'not ' + sign} {limit:g}"):
            return False, notes
    if match.pixel_region is not None:
        guess = region.get()
        if guess is None:
            return check(False, f"pixel region not available: {region.error}"), notes
        found = [r for r in guess.regions if r in match.pixel_region]
        text = (
            f"pixel region {guess.regions} includes {found}"
            if found
            else f"pixel region {guess.regions} has none of {match.pixel_region}"
        )
        if not check(bool(found), f"{text} ({guess.reason})"):
            return False, notes
    if not notes:
        notes.append("no conditions (matches every series)")
    return True, notes


def route_series(
    headers: Sequence[Dataset],
    rules: Sequence[RoutingRule],
    *,
    pixel_region: Callable[[], RegionGuess] | None = None,
) -> RoutingDecision:
    """Decide which protocol one series goes to.

    Parameters
    ----------
    headers:
        The instances of ONE series (Pixel Data not needed).
    rules:
        The routing table, in order (e.g. :func:`default_rules`).
    pixel_region:
        Callback returning the pixel classifier's guess for this series (e.g.
        ``lambda: guess_series_region(datasets_with_pixels)``). Called at most once, only when
        a rule whose header conditions hold has a ``pixel_region`` condition. When ``None``,
        such conditions fail with a note in ``checks``. An :class:`~ainode_core.errors.AINodeError`
        it raises makes those conditions fail, with the error in ``checks``.

    Returns
    -------
    RoutingDecision
        The first rule whose conditions all hold decides; without one the series is ignored
        (``protocol=None``, ``rule=None``) with a reason naming what was seen.
    """
    if not headers:
        return RoutingDecision(None, None, "empty series: no instances to route", [])
    summary = summarize_series(headers)
    region = _LazyRegion(pixel_region)
    checks: list[str] = []
    for index, rule in enumerate(rules):
        matched, notes = _evaluate(rule.match, summary, region)
        if not matched:
            checks.append(f"rule {rule.name!r}: no - {notes[-1]}")
            continue
        target = rule.protocol if rule.protocol is not None else "ignore"
        checks.append(f"rule {rule.name!r}: MATCH -> {target} ({'; '.join(notes)})")
        checks.extend(
            f"rule {later.name!r}: not evaluated (rule {rule.name!r} matched first)"
            for later in rules[index + 1 :]
        )
        why = rule.description.strip() or "; ".join(notes)
        if rule.protocol is None:
            reason = f"ignored by rule {rule.name!r}: {why}"
        else:
            reason = f"routed to {rule.protocol} by rule {rule.name!r}: {why}"
        if rule.match.pixel_region is not None and region.guess is not None:
            reason += f" [{region.guess.reason}]"
        logger.info("routing: %s", reason)
        return RoutingDecision(rule.protocol, rule.name, reason, checks, rule.priority)
    reason = f"no routing rule matched: {summary.describe()}"
    if region.guess is not None:
        reason += f"; {region.guess.reason}"
    logger.info("routing: %s", reason)
    return RoutingDecision(None, None, reason, checks)


# --- Loading -------------------------------------------------------------------------------------


def _rule_label(index: int, raw: object) -> str:
    name = raw.get("name") if isinstance(raw, dict) else getattr(raw, "name", None)
    return f"rule {index + 1} ({name!r})" if name else f"rule {index + 1}"


def load_rules(
    path_or_list: str | os.PathLike[str] | Sequence[RoutingRule | dict[str, Any]],
    *,
    known_protocols: Collection[str] | None = None,
) -> list[RoutingRule]:
    """Load and validate a routing table.

    Parameters
    ----------
    path_or_list:
        A YAML file holding a list of rules, or a mapping with a ``rules:`` list; or the list
        itself (dicts or :class:`RoutingRule`).
    known_protocols:
        When given, every rule's protocol must be one of these.

    Returns
    -------
    list[RoutingRule]
        The rules, in order.

    Raises
    ------
    RoutingError
        If the file cannot be read or parsed, a rule is malformed (unknown key, invalid regular
        expression, min greater than max), two rules share a name, or a protocol is unknown.
        The message names the rule.
    """
    source = "routing rules"
    if isinstance(path_or_list, (str, os.PathLike)):
        source = str(path_or_list)
        try:
            loaded = yaml.safe_load(Path(path_or_list).read_text(encoding="utf-8"))
        except OSError as exc:
            raise RoutingError(f"{source}: cannot read the routing rules ({exc})") from exc
        except yaml.YAMLError as exc:
            raise RoutingError(f"{source}: invalid YAML ({exc})") from exc
        if isinstance(loaded, dict):
            loaded = loaded.get("rules")
        if not isinstance(loaded, list):
            raise RoutingError(
                f"{source}: expected a list of rules (or a mapping with a 'rules:' list), got "
                f"{type(loaded).__name__}"
            )
        raw_rules: Sequence[object] = loaded
    else:
        raw_rules = path_or_list
    rules: list[RoutingRule] = []
    names: set[str] = set()
    for index, raw in enumerate(raw_rules):
        label = _rule_label(index, raw)
        try:
            rule = raw if isinstance(raw, RoutingRule) else RoutingRule.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'rule'}: {error['msg']}"
                for error in exc.errors()
            )
            raise RoutingError(f"{source}: {label} is invalid: {problems}") from exc
        if rule.name in names:
            raise RoutingError(
                f"{source}: {label}: duplicate rule name {rule.name!r}; names must be unique"
            )
        names.add(rule.name)
        if (
            known_protocols is not None
            and rule.protocol is not None
            and rule.protocol not in known_protocols
        ):
            raise RoutingError(
                f"{source}: {label} routes to unknown protocol {rule.protocol!r}; known: "
                f"{sorted(known_protocols)}"
            )
        rules.append(rule)
    return rules


def configured_rules(rules: Sequence[RoutingRule | dict[str, Any]] | None) -> list[RoutingRule]:
    """The routing table a node uses: ``rules`` from its settings, or the shipped defaults.

    Configured rules are checked against the protocols ainode knows
    (:func:`pipelines.registry.protocols`), so a misspelt protocol stops the configuration from
    loading instead of failing jobs later.

    Raises
    ------
    RoutingError
        If a configured rule is invalid.
    """
    if rules is None:
        return default_rules()
    from pipelines.registry import protocols

    return load_rules(rules, known_protocols=protocols())


def merged_default_rules(
    core: Sequence[Any], protocol_specs: Iterable[Any]
) -> list[dict[str, Any]]:
    """The default table: the core rules with every protocol's rules inserted by stage.

    Parameters
    ----------
    core:
        The protocol-independent rules of ``node/default_routing.yaml``, with one placeholder
        ``{"protocol_rules": STAGE}`` per stage (``override``, ``exclude``, ``metadata``,
        ``pixel``) where that stage's rules go.
    protocol_specs:
        The registered :class:`pipelines.protocol.ProtocolSpec` objects; each
        ``default_rules`` entry carries ``stage`` and optionally ``order`` (default 100).

    Returns
    -------
    list[dict]
        Rules in the node's rule syntax (``stage``/``order`` removed): within a stage by
        ``order``, then protocol name, then their order in the spec.

    Raises
    ------
    RoutingError
        A placeholder naming an unknown stage, or a stage without a placeholder that has rules.
    """
    by_stage: dict[str, list[tuple[float, str, int, dict[str, Any]]]] = {}
    for spec in protocol_specs:
        for position, raw in enumerate(spec.default_rules):
            rule = dict(raw)
            stage = str(rule.pop("stage", ""))
            order = float(rule.pop("order", 100))
            by_stage.setdefault(stage, []).append((order, spec.name, position, rule))
    merged: list[dict[str, Any]] = []
    placed: set[str] = set()
    for raw in core:
        if isinstance(raw, dict) and "protocol_rules" in raw:
            stage = str(raw["protocol_rules"])
            if stage in placed:
                raise RoutingError(f"default routing table: stage {stage!r} placed twice")
            placed.add(stage)
            merged.extend(rule for *_, rule in sorted(by_stage.get(stage, []), key=lambda t: t[:3]))
            continue
        merged.append(raw)
    missing = sorted(set(by_stage) - placed)
    if missing:
        raise RoutingError(
            f"protocol rules of stage(s) {missing} have no place in the default routing table"
        )
    return merged


def default_rules() -> list[RoutingRule]:
    """The routing table shipped with ainode: the protocol-independent rules of
    ``node/default_routing.yaml`` with every registered protocol's rules merged in by stage
    (:func:`merged_default_rules`).

    Returns
    -------
    list[RoutingRule]
        The default rules, in order; see ``docs/routing.md`` for each one.

    Raises
    ------
    RoutingError
        If the packaged file is missing or invalid (a packaging bug), or a protocol's rules are.
    """
    from pipelines.registry import protocols

    resource = resources.files("node").joinpath(DEFAULT_ROUTING_FILE)
    with resources.as_file(resource) as path:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RoutingError(f"{path}: cannot read the default routing rules ({exc})") from exc
    core = loaded.get("rules") if isinstance(loaded, dict) else loaded
    if not isinstance(core, list):
        raise RoutingError(f"{path}: expected a 'rules:' list")
    registered = protocols()
    return load_rules(
        merged_default_rules(core, registered.values()), known_protocols=registered
    )
