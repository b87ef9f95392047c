"""Typed parameters of ``l3-body-composition`` (its spec: :mod:`pipelines.protocols.l3_body_composition`).

Light on purpose (pydantic only): the spec, the method and the node's settings all import it.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from ainode_core.errors import PipelineError
from pipelines.parameters import HUBand, Number, ProtocolParameters, check_ordered

NAME = "l3-body-composition"


#: Names of the sex-specific low-SMI cut-off sets (``none``: no flag); the sets themselves, with
#: their sources, are :data:`pipelines.l3_body_composition.CUTOFFS`.
CUTOFF_SET_NAMES = ("none", "prado-2008", "martin-2013", "van-der-werf-2018")


class L3Parameters(ProtocolParameters):
    """Parameters of the L3 body-composition protocol.

    Attributes
    ----------
    muscle_hu:
        Skeletal-muscle band (lower, upper) HU: -29..150 (Alberta protocol; Mitsiopoulos 1998).
    sat_hu:
        SAT band, HU: -190..-30 (same source).
    imat_hu:
        IMAT band, HU: -190..-30 (same source).
    vat_hu:
        VAT band, HU: -150..-50 (same source; some groups use -190..-30).
    cutoff_set:
        ``"none"`` (default: no flag; cut-offs belong to their source populations),
        ``"prado-2008"``, ``"martin-2013"`` (needs BMI: Patient's Weight and Size) or
        ``"van-der-werf-2018"``. Another name raises :class:`PipelineError` (also when the
        model is built directly).
    slice_convention:
        Only ``"mid-L3"``: the middle slice of the L3 vertebral body.
    skin_mm:
        Skin thickness stripped from the body outline before compartments are built, mm.
    wall_closing_mm:
        Radius of the closing that bridges small gaps in the abdominal-wall muscle ring, mm.
    organ_min_thickness_mm:
        Soft tissue thicker than this lying mostly outside the paraspinal and psoas regions is an
        organ (e.g. liver, spleen) even where it touches the abdominal wall, mm.
    wall_max_depth_mm:
        Anterior and lateral to the spine, muscle is looked for only this deep below the outer
        muscle surface (the abdominal-wall muscles are thinner), mm.
    imat_max_hole_cm2:
        Fat holes inside muscle up to this area are IMAT; bigger enclosed regions are not.
    arm_neck_mm:
        An arm lying against the trunk is cut off where their contact is narrower than twice
        this (arms are not part of the L3 compartments), mm.
    """

    protocol = NAME

    muscle_hu: HUBand = Field(default=(-29.0, 150.0), description="Skeletal-muscle band, HU.")
    sat_hu: HUBand = Field(default=(-190.0, -30.0), description="SAT band, HU.")
    imat_hu: HUBand = Field(default=(-190.0, -30.0), description="IMAT band, HU.")
    vat_hu: HUBand = Field(default=(-150.0, -50.0), description="VAT band, HU.")
    cutoff_set: str = Field(
        default="none",
        description=(
            "Sex-specific low-SMI cut-off set for the sarcopenia flag: none, prado-2008, "
            "martin-2013 or van-der-werf-2018 (sources in docs/pipelines/l3-body-composition.md)."
        ),
    )
    slice_convention: str = Field(
        default="mid-L3", description="Only 'mid-L3': the middle slice of the L3 vertebral body."
    )
    skin_mm: Number = Field(default=3.0, ge=0.0, le=20.0, description="Skin stripped, mm.")
    wall_closing_mm: Number = Field(
        default=5.0, ge=0.0, le=30.0, description="Closing radius of the abdominal wall, mm."
    )
    organ_min_thickness_mm: Number = Field(
        default=24.0, gt=0.0, le=100.0, description="Thicker soft tissue is an organ, mm."
    )
    wall_max_depth_mm: Number = Field(
        default=25.0, gt=0.0, le=100.0, description="Depth of the abdominal-wall search, mm."
    )
    imat_max_hole_cm2: Number = Field(
        default=10.0, gt=0.0, le=100.0, description="Largest fat hole counted as IMAT, cm²."
    )
    arm_neck_mm: Number = Field(
        default=12.0, ge=0.0, le=50.0, description="Half-width of an arm's contact cut off, mm."
    )

    @field_validator("cutoff_set")
    @classmethod
    def _known_cutoff_set(cls, value: str) -> str:
        if value not in CUTOFF_SET_NAMES:
            raise PipelineError(
                f"unknown cut-off set {value!r}; choose one of {', '.join(CUTOFF_SET_NAMES)}"
            )
        return value

    @field_validator("slice_convention")
    @classmethod
    def _mid_l3(cls, value: str) -> str:
        if value != "mid-L3":
            raise PipelineError(f"slice convention {value!r} is not implemented; use 'mid-L3'")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> L3Parameters:
        check_ordered(self, ("muscle_hu", "sat_hu", "imat_hu", "vat_hu"), NAME)
        return self
