"""Typed parameters of ``chest-respiratory-muscle`` (its spec: :mod:`pipelines.protocols.chest_respiratory_muscle`).

Light on purpose (pydantic only): the spec, the method and the node's settings all import it.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from pipelines.parameters import (
    HU,
    Flag,
    HUBand,
    Number,
    Pair,
    ProtocolParameters,
    check_ordered,
)

NAME = "chest-respiratory-muscle"


def _mm(default: float, description: str, high: float = 200.0) -> Any:
    return Field(default=default, ge=0.0, le=high, description=description)


class ChestParameters(ProtocolParameters):
    """Parameters of the chest respiratory-muscle protocol (keys of the node's ``params``).

    Attributes
    ----------
    muscle_hu:
        Skeletal-muscle band, HU: -29..150 (Alberta protocol; Mitsiopoulos et al. 1998).
    low_attenuation_hu:
        Low-attenuation muscle band, HU: -29..29, below the +30..+150 "normal attenuation" band
        (Kim DW et al., Korean J Radiol 2021).
    bone_threshold_hu, lung_threshold_hu:
        Bone (above) and lung/air (below) thresholds, HU.
    gas_max_median_hu:
        Air regions with a median at or below this are gas, not lung (bowel gas about -1000 HU).
    min_lung_fraction:
        A lung fills at least this fraction of the body in some slice.
    min_slab_mm:
        Shortest lung slab measured (shorter series are rejected as too short).
    skin_mm:
        Skin stripped from the body outline, mm.
    intercostal_max_gap_mm:
        Rib above and below an intercostal voxel must lie within this distance, mm.
    paravertebral_half_width_mm:
        Half-width of the paravertebral region (no intercostal muscle there), mm.
    erector_min_depth_mm:
        Erector spinae lies more than this dorsal to the vertebral-body centre, mm.
    erector_lateral_mm:
        Bounds of the erector spinae's lateral limit, mm from the midline: the limit is the rib
        angle of the slice (the most dorsal point of the ribs lining the lung, where the
        iliocostalis ends; 4-8 cm from the midline in adults: Gray's Anatomy, 42nd ed., back
        muscles) plus ``erector_angle_margin_mm``, held within these bounds (and this range's
        middle where no rib angle is seen).
    erector_angle_margin_mm:
        Margin lateral of the rib angle, mm.
    erector_fat_plane_mm:
        A run of fat (below the muscle band) at least this long along a dorsal ray is the fat
        plane between the erector spinae and the superficial back muscles (trapezius,
        rhomboids, latissimus), mm.
    erector_max_gap_mm:
        The erector spinae starts within this distance dorsal of the lamina, transverse process
        or rib (or of the lung) of its ray, mm.
    erector_extension_mm:
        The erector spinae is also measured this far below the lowest lung slice (so that the
        mid-T12 ESMA exists when the lungs end above it), mm.
    cage_window_mm:
        Rib bone within this cranio-caudal distance spans the thoracic cavity of a slice, mm.
    pectoralis_max_angle_deg:
        Superficial muscle within this angle of the anterior direction is pectoralis, degrees.
    pectoralis_apex_margin_mm:
        Pectoralis is looked for only this far below the lung apices, mm.
    include_diaphragm:
        Segment the (lower-confidence) diaphragm; ``true`` or ``false`` only (strict: ``"no"``
        is refused, not read as true).
    diaphragm_thickness_mm, diaphragm_clear_below_mm:
        Sheet thickness below a lung base, and lung-free distance below it, mm.
    """

    protocol = NAME

    muscle_hu: HUBand = Field(default=(-29.0, 150.0), description="Skeletal-muscle band, HU.")
    low_attenuation_hu: HUBand = Field(
        default=(-29.0, 29.0), description="Low-attenuation muscle band, HU."
    )
    bone_threshold_hu: HU = Field(default=200.0, description="Bone threshold, HU.")
    lung_threshold_hu: HU = Field(default=-400.0, description="Lung/air threshold, HU.")
    gas_max_median_hu: HU = Field(
        default=-975.0, description="Air regions with a median at or below this are gas, HU."
    )
    min_lung_fraction: Number = Field(
        default=0.05, gt=0.0, lt=1.0, description="Least fraction of the body a lung fills."
    )
    min_slab_mm: Number = _mm(40.0, "Shortest lung slab measured, mm.", 400.0)
    skin_mm: Number = _mm(3.0, "Skin stripped from the body outline, mm.", 20.0)
    intercostal_max_gap_mm: Number = _mm(25.0, "Rib gap of an intercostal voxel, mm.")
    paravertebral_half_width_mm: Number = _mm(60.0, "Paravertebral half-width, mm.")
    erector_min_depth_mm: Number = _mm(15.0, "Erector spinae depth behind the body, mm.")
    erector_lateral_mm: Pair = Field(
        default=(45.0, 90.0), description="Bounds of the erector spinae's lateral limit, mm."
    )
    erector_angle_margin_mm: Number = _mm(10.0, "Margin lateral of the rib angle, mm.")
    erector_fat_plane_mm: Number = _mm(2.5, "Length of the erector fat plane, mm.")
    erector_max_gap_mm: Number = _mm(15.0, "Start of the erector spinae, mm.")
    erector_extension_mm: Number = _mm(40.0, "Erector spinae below the lungs, mm.")
    cage_window_mm: Number = _mm(20.0, "Rib window spanning the cavity, mm.")
    pectoralis_max_angle_deg: Number = Field(
        default=65.0, ge=0.0, le=180.0, description="Pectoralis angle from anterior, degrees."
    )
    pectoralis_apex_margin_mm: Number = _mm(20.0, "Pectoralis below the apices, mm.")
    include_diaphragm: Flag = Field(
        default=True, description="Segment and report the diaphragm (lower-confidence structure)."
    )
    diaphragm_thickness_mm: Number = _mm(5.0, "Diaphragm sheet thickness, mm.", 50.0)
    diaphragm_clear_below_mm: Number = _mm(10.0, "Lung-free distance below it, mm.", 100.0)

    @model_validator(mode="after")
    def _ordered(self) -> ChestParameters:
        for name in ("erector_lateral_mm",):
            if min(getattr(self, name)) < 0:
                raise ValueError(f"{name} must not be negative")
        check_ordered(self, ("muscle_hu", "low_attenuation_hu", "erector_lateral_mm"), NAME)
        return self
