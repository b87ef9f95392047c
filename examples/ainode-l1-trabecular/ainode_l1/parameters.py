"""Typed parameters of the L1 trabecular attenuation protocol (the single source of their bounds).

The node passes ``protocol_params["l1-trabecular-attenuation"]`` from its YAML; the core
validates them with :class:`L1Parameters` (unknown names, wrong types and out-of-range values are
refused with the parameter's name).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Published source of the default threshold. The design, the L1 emphasis and "an L1 threshold of
#: 160 HU or less" were checked against the abstract's text; the 90 % / more than 90 % figures
#: are as the abstract is commonly quoted (check the paper before relying on them).
THRESHOLD_SOURCE = (
    "Pickhardt PJ et al., Ann Intern Med 2013;158(8):588-595: L1 trabecular attenuation "
    "<= 160 HU was 90% sensitive and <= 110 HU more than 90% specific for DXA-defined "
    "osteoporosis (vs osteopenia and normal BMD), 2067 CT-DXA pairs, 120 kV"
)


class L1Parameters(BaseModel):
    """Parameters of the L1 trabecular attenuation measurement.

    Attributes
    ----------
    threshold_hu:
        Mean ROI attenuation at or below which the result is flagged "low attenuation (possible
        osteoporosis)", HU. Default 110 HU: more than 90 % specific for DXA osteoporosis in
        Pickhardt et al. 2013 (:data:`THRESHOLD_SOURCE`); 160 HU is the 90 %-sensitive
        rule-out threshold of the same paper (more flags, more false positives).
    cortex_margin_mm:
        The ROI keeps at least this distance from the outer surface of the vertebral body
        (cortical shell about 0.5-2 mm thick, plus partial volume), mm.
    posterior_limit_fraction:
        The ROI lies in this anterior fraction of the body's antero-posterior depth, so the
        basivertebral vein (entering the posterior wall centrally) and the posterior venous
        plexus are avoided.
    endplate_margin_mm:
        The measured mid-vertebral slice is at least this far from either end-plate (the first
        and last bone slice of L1) when the vertebra is tall enough; otherwise a warning, mm.
    min_roi_area_mm2:
        Smallest ROI accepted, mm² (a smaller ellipse means the body was not found cleanly).
    min_aspect, max_aspect:
        Range of the ROI ellipse's antero-posterior / lateral axis ratio searched.
    bone_threshold_hu:
        Upper bound of the bone threshold used to find the vertebra in the slice (the spine
        labelling adapts its own threshold to the scan and the lower of the two is used), HU.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold_hu: float = Field(110.0, ge=50.0, le=300.0,
                                description="flag at or below this mean ROI HU")
    cortex_margin_mm: float = Field(4.0, ge=1.0, le=10.0,
                                    description="distance of the ROI from the body surface, mm")
    posterior_limit_fraction: float = Field(
        0.6, ge=0.3, le=0.9, description="ROI within this anterior fraction of the body depth")
    endplate_margin_mm: float = Field(5.0, ge=0.0, le=15.0,
                                      description="measured slice distance from end-plates, mm")
    min_roi_area_mm2: float = Field(60.0, ge=10.0, le=1000.0,
                                    description="smallest ROI accepted, mm²")
    min_aspect: float = Field(0.3, ge=0.1, le=1.0,
                              description="smallest AP/lateral axis ratio of the ROI ellipse")
    max_aspect: float = Field(1.0, ge=0.1, le=2.0,
                              description="largest AP/lateral axis ratio of the ROI ellipse")
    bone_threshold_hu: float = Field(200.0, ge=100.0, le=400.0,
                                     description="upper bound of the bone threshold, HU")

    @model_validator(mode="after")
    def _aspect_range(self) -> L1Parameters:
        if self.min_aspect > self.max_aspect:
            raise ValueError(
                f"min_aspect {self.min_aspect} is larger than max_aspect {self.max_aspect}; "
                "give min_aspect <= max_aspect"
            )
        return self
