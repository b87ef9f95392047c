"""Series selection: which series of a study each protocol runs on, and why the others not.

A PACS forwards whole studies: a scout, thick and thin axial reconstructions, soft-tissue and bone
kernels, reformats, dose reports and, after a first run, our own SEG/SR/SC. Every series is routed
(:func:`node.routing.route_series`); the series routed to the same protocol are candidates, and
:func:`select_series` ranks them by the protocol's :class:`SeriesPreferences` and chooses one.
Every series gets a :class:`SeriesChoice` with a reason a person can read.

Pure: no I/O, no database, no pixels. Preferences per protocol come from
:attr:`pipelines.protocol.ProtocolSpec.series_preferences`, overridden by the site's YAML
(``series_selection:``, :class:`node.config.Settings`). Documented in ``docs/routing.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from node.routing import RoutingDecision, SeriesSummary

#: Soft-tissue (smooth) reconstruction kernels of the common vendors: GE STANDARD/SOFT, Siemens
#: B/Br/H/Hr/I/Qr/J 10-49, Philips B/C, Canon/Toshiba FC01-FC18, words.
SOFT_TISSUE_KERNEL = (
    r"soft|standard|\bstd\b|body|abdomen|\bbrain\b|smooth|^\s*[ABC]\s*$"
    r"|\b(B|Br|H|Hr|I|Qr|J)[1-4]\d[a-z]?\b|\bFC(0?\d|1[0-8])\b"
)
#: Bone, lung and other sharp kernels: GE BONE/LUNG/EDGE/DETAIL, Siemens B/Br/Bl/H/Hr/I/Qr 50-99,
#: Philips D/L/YA-YC, Canon/Toshiba FC30+ and FC50+.
SHARP_KERNEL = (
    r"bone|lung|sharp|edge|detail|^\s*[DLE]\s*$|\bY[A-D]\b"
    r"|\b(B|Br|Bl|H|Hr|I|Qr)[5-9]\d[a-z]?\b|\bFC([3-9]\d)\b"
)


class SeriesPreferences(BaseModel):
    """What a protocol prefers in a series; the candidates are ranked by these, in this order.

    1. ``orientation`` (e.g. axial over coronal/sagittal reformats);
    2. Image Type ORIGINAL\\PRIMARY over DERIVED or SECONDARY, over DERIVED\\SECONDARY;
    3. kernel: ``preferred_kernel`` over unknown over ``avoided_kernel``;
    4. ``contrast`` as wanted (when set);
    5. median slice thickness inside ``slice_thickness_mm`` (else the distance to the range);
    6. z-coverage at least ``min_coverage_mm``;
    7. ``presentation_intent`` and ``view_position`` (radiographs);
    8. more images; then the lower Series Number.

    Localizers (``exclude_localizers``, default on), DERIVED or SECONDARY images when
    ``exclude_derived`` is on (default off: many CR images and thick CT reconstructions are
    ``DERIVED\\SECONDARY`` and usable when nothing better came) and ainode's own objects (always)
    are never chosen.
    """

    model_config = ConfigDict(extra="forbid")

    orientation: list[str] | None = Field(
        default=None, description="Preferred planes (axial, coronal, sagittal, oblique); none: any."
    )
    preferred_kernel: str | None = Field(
        default=SOFT_TISSUE_KERNEL,
        description="Regex (case-insensitive) of preferred Convolution Kernels (soft tissue).",
    )
    avoided_kernel: str | None = Field(
        default=SHARP_KERNEL,
        description="Regex (case-insensitive) of kernels ranked last (bone, lung, sharp).",
    )
    slice_thickness_mm: tuple[float, float] | None = Field(
        default=None, description="Preferred [min, max] median Slice Thickness (mm)."
    )
    min_coverage_mm: float | None = Field(
        default=None, ge=0, description="z-coverage the protocol needs (mm), e.g. 80 for a head."
    )
    contrast: bool | None = Field(
        default=None, description="Prefer series with (true) or without (false) contrast agent."
    )
    presentation_intent: str | None = Field(
        default=None, description="Preferred Presentation Intent Type, e.g. 'FOR PRESENTATION'."
    )
    view_position: list[str] | None = Field(
        default=None, description="Preferred View Positions (e.g. PA, AP: frontal radiographs)."
    )
    exclude_localizers: bool = Field(default=True, description="Never choose a localizer.")
    exclude_derived: bool = Field(
        default=False,
        description="Never choose DERIVED or SECONDARY images (off: they rank below ORIGINAL "
        "PRIMARY ones).",
    )

    _patterns: dict[str, re.Pattern[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> SeriesPreferences:
        patterns: dict[str, re.Pattern[str]] = {}
        for name in ("preferred_kernel", "avoided_kernel"):
            value = getattr(self, name)
            if value is None:
                continue
            try:
                patterns[name] = re.compile(value, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"{name}: invalid regular expression {value!r} ({exc})") from exc
        if self.slice_thickness_mm is not None:
            low, high = self.slice_thickness_mm
            if low < 0 or low > high:
                raise ValueError(
                    f"slice_thickness_mm: [{low}, {high}] is not a range [min, max] with "
                    "0 <= min <= max"
                )
        self._patterns = patterns
        return self

    def kernel_class(self, kernel: str) -> int:
        """0 preferred kernel, 1 unknown or neither, 2 avoided kernel."""
        if not kernel:
            return 1
        avoided = self._patterns.get("avoided_kernel")
        if avoided is not None and avoided.search(kernel):
            return 2
        preferred = self._patterns.get("preferred_kernel")
        if preferred is not None and preferred.search(kernel):
            return 0
        return 1


def preferences_for(
    protocol: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> SeriesPreferences:
    """The preferences of ``protocol``: its spec's defaults updated by the site's overrides.

    Raises
    ------
    pydantic.ValidationError
        If a key is unknown or a value invalid (the configuration check reports it).
    """
    merged = dict(defaults)
    merged.update(overrides or {})
    return SeriesPreferences.model_validate(merged)


@dataclass(frozen=True)
class SeriesCandidate:
    """One series of a study as selection sees it: its header summary and routing decision."""

    summary: SeriesSummary
    decision: RoutingDecision


@dataclass(frozen=True)
class SeriesChoice:
    """The outcome for one series of a study.

    Attributes
    ----------
    series_instance_uid:
        The series.
    protocol:
        The protocol it was routed to, or ``None`` (ignored by routing, or excluded).
    chosen:
        True for the one series each protocol runs on.
    rank:
        1 for the chosen series, 2... for the other candidates of the protocol; ``None`` when
        the series was no candidate.
    reason:
        One sentence, e.g. "chosen for brain-gwr: axial ORIGINAL, soft-tissue kernel, 1.0 mm,
        98 images" or "skipped for brain-gwr: 5.0 mm thick; series 2 (1.0 mm) preferred".
    """

    series_instance_uid: str
    protocol: str | None
    chosen: bool
    rank: int | None
    reason: str


def _label(summary: SeriesSummary) -> str:
    if summary.series_number is not None:
        return f"series {summary.series_number}"
    return f"series {summary.series_instance_uid[-12:] or '(no UID)'}"


def _mm(value: float | None) -> str:
    return "thickness unknown" if value is None else f"{value:g} mm"


def exclusion(summary: SeriesSummary, prefs: SeriesPreferences | None = None) -> str | None:
    """Why a series can never be chosen, or ``None``."""
    if summary.ours:
        return "an ainode output (never analysed again)"
    if (prefs is None or prefs.exclude_localizers) and summary.localizer:
        return "localizer"
    if prefs is not None and prefs.exclude_derived and summary.derived:
        return "DERIVED/SECONDARY images (" + "\\".join(summary.image_type) + ")"
    return None


def _thickness_distance(summary: SeriesSummary, prefs: SeriesPreferences) -> float:
    if prefs.slice_thickness_mm is None:
        return 0.0
    thickness = summary.slice_thickness_mm
    if thickness is None:
        return 1e6
    low, high = prefs.slice_thickness_mm
    return max(0.0, low - thickness, thickness - high)


def _image_type_class(summary: SeriesSummary) -> int:
    """0 ORIGINAL\\PRIMARY, 1 DERIVED or SECONDARY, 2 DERIVED\\SECONDARY (or no Image Type)."""
    if not summary.image_type:
        return 2
    derived = summary.image_type[0] != "ORIGINAL"
    secondary = len(summary.image_type) > 1 and summary.image_type[1] == "SECONDARY"
    return int(derived) + int(secondary)


def _image_type(summary: SeriesSummary) -> str:
    if summary.image_type[:2] == ("ORIGINAL", "PRIMARY"):
        return "ORIGINAL"
    return "\\".join(summary.image_type[:2]) or "image type unknown"


def _criteria(summary: SeriesSummary, prefs: SeriesPreferences) -> tuple[Any, ...]:
    """Sort key (smaller is better), one entry per preference in :class:`SeriesPreferences`
    order."""
    plane = 0 if prefs.orientation is None or summary.orientation in prefs.orientation else 1
    original = _image_type_class(summary)
    kernel = prefs.kernel_class(summary.kernel)
    contrast = 0 if prefs.contrast is None or summary.contrast == prefs.contrast else 1
    thickness = _thickness_distance(summary, prefs)
    coverage = 0.0
    if prefs.min_coverage_mm is not None:
        covered = summary.z_coverage_mm or 0.0
        coverage = max(0.0, prefs.min_coverage_mm - covered)
    intent = (
        0
        if prefs.presentation_intent is None
        or summary.presentation_intent == prefs.presentation_intent.upper()
        else 1
    )
    view = (
        0
        if prefs.view_position is None
        or summary.view_position in [v.upper() for v in prefs.view_position]
        else 1
    )
    number = summary.series_number if summary.series_number is not None else 1 << 30
    return (
        plane, original, kernel, contrast, thickness, coverage, intent, view,
        -summary.instances, number, summary.series_instance_uid,
    )


_KERNEL_WORDS = ("soft-tissue kernel", "kernel unknown", "bone/lung kernel")


def _strengths(summary: SeriesSummary, prefs: SeriesPreferences) -> str:
    parts = [f"{summary.orientation or 'unknown plane'} {_image_type(summary)}"]
    if summary.modality == "CT" or summary.kernel:
        parts.append(_KERNEL_WORDS[prefs.kernel_class(summary.kernel)])
    if summary.slice_thickness_mm is not None:
        parts.append(_mm(summary.slice_thickness_mm))
    if summary.z_coverage_mm is not None and prefs.min_coverage_mm is not None:
        parts.append(f"{summary.z_coverage_mm:g} mm covered")
    if summary.presentation_intent:
        parts.append(summary.presentation_intent)
    if summary.view_position:
        parts.append(f"view {summary.view_position}")
    parts.append(f"{summary.instances} image(s)")
    return ", ".join(parts)


def _why_worse(
    loser: SeriesSummary, winner: SeriesSummary, prefs: SeriesPreferences
) -> str:
    """The first preference on which ``loser`` ranks below ``winner``, in words."""
    a, b = _criteria(loser, prefs), _criteria(winner, prefs)
    won = _label(winner)
    if a[0] != b[0]:
        return f"{loser.orientation or 'unknown'} plane; {won} ({winner.orientation}) preferred"
    if a[1] != b[1]:
        return f"Image Type {_image_type(loser)}; {won} ({_image_type(winner)}) preferred"
    if a[2] != b[2]:
        return (
            f"{_KERNEL_WORDS[a[2]]}; {won} ({_KERNEL_WORDS[b[2]]}) preferred"
        )
    if a[3] != b[3]:
        state = "with" if loser.contrast else "without"
        return f"{state} contrast agent; {won} preferred"
    if a[4] != b[4]:
        low, high = prefs.slice_thickness_mm or (0.0, 0.0)
        return (
            f"{_mm(loser.slice_thickness_mm)} thick (preferred {low:g}-{high:g} mm); "
            f"{won} ({_mm(winner.slice_thickness_mm)}) preferred"
        )
    if a[5] != b[5]:
        return (
            f"covers {loser.z_coverage_mm or 0:g} mm (needs {prefs.min_coverage_mm:g} mm); "
            f"{won} ({winner.z_coverage_mm or 0:g} mm) preferred"
        )
    if a[6] != b[6]:
        return (
            f"Presentation Intent {loser.presentation_intent or '(none)'}; {won} "
            f"({winner.presentation_intent}) preferred"
        )
    if a[7] != b[7]:
        return f"View Position {loser.view_position or '(none)'}; {won} ({winner.view_position}) preferred"
    if a[8] != b[8]:
        return f"{loser.instances} image(s); {won} ({winner.instances}) has more"
    return f"equally suitable; {won} comes first by Series Number"


def select_series(
    candidates: Sequence[SeriesCandidate],
    preferences: Mapping[str, SeriesPreferences],
) -> list[SeriesChoice]:
    """Choose, for every protocol the series of one study route to, the series to run it on.

    Parameters
    ----------
    candidates:
        Every series of the study with its header summary and routing decision.
    preferences:
        Preferences by protocol name; a protocol missing here gets :class:`SeriesPreferences`
        defaults.

    Returns
    -------
    list[SeriesChoice]
        One per series, in the order of ``candidates``: at most one ``chosen`` series per
        protocol; a series routed nowhere carries its routing reason; a localizer, excluded image
        or ainode output is never chosen.
    """
    by_protocol: dict[str, list[int]] = {}
    choices: dict[int, SeriesChoice] = {}
    for index, candidate in enumerate(candidates):
        summary, decision = candidate.summary, candidate.decision
        protocol = decision.protocol
        prefs = preferences.get(protocol) if protocol is not None else None
        excluded = exclusion(summary, prefs)
        uid = summary.series_instance_uid
        if protocol is None:
            reason = f"skipped: {excluded}" if excluded else f"skipped: {decision.reason}"
            choices[index] = SeriesChoice(uid, None, False, None, reason)
        elif excluded:
            choices[index] = SeriesChoice(
                uid, protocol, False, None, f"skipped for {protocol}: {excluded}"
            )
        else:
            by_protocol.setdefault(protocol, []).append(index)
    for protocol, indices in by_protocol.items():
        prefs = preferences.get(protocol) or SeriesPreferences()
        ranked = sorted(indices, key=lambda i: _criteria(candidates[i].summary, prefs))
        best = candidates[ranked[0]].summary
        for rank, index in enumerate(ranked, start=1):
            summary = candidates[index].summary
            if rank == 1:
                others = f"; {len(ranked) - 1} other candidate(s)" if len(ranked) > 1 else ""
                reason = f"chosen for {protocol}: {_strengths(summary, prefs)}{others}"
            else:
                reason = f"skipped for {protocol}: {_why_worse(summary, best, prefs)}"
            choices[index] = SeriesChoice(
                summary.series_instance_uid, protocol, rank == 1, rank, reason
            )
    return [choices[i] for i in range(len(candidates))]


__all__ = [
    "SHARP_KERNEL",
    "SOFT_TISSUE_KERNEL",
    "SeriesCandidate",
    "SeriesChoice",
    "SeriesPreferences",
    "exclusion",
    "preferences_for",
    "select_series",
]
