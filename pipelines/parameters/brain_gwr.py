"""Typed parameters of ``brain-gwr`` (its spec: :mod:`pipelines.protocols.brain_gwr`).

Light on purpose (pydantic only): the spec, the method and the node's settings all import it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from pipelines.parameters import (
    HU,
    Flag,
    HUBand,
    Integer,
    Number,
    Pair,
    ProtocolParameters,
    check_ordered,
)

NAME = "brain-gwr"


#: Default basal-ganglia GWR cut-off (Torbey et al., Stroke 2000).
DEFAULT_GWR_CUTOFF = 1.18


class BrainGWRParameters(ProtocolParameters):
    """Parameters of the ``brain-gwr`` protocol (keys of the node's ``params`` mapping).

    Attributes
    ----------
    parenchyma_hu:
        (lower, upper) HU kept in the landmarks: 10..60 HU. Non-contrast CT gray matter is
        37-45 HU and white matter 20-30 HU (clinical.md §4.3, Buzug 2008); CSF lies below 10 HU,
        calcification, blood and bone above 60 HU.
    erosion_mm:
        In-plane erosion radius of the in-band mask against partial volume, mm (at least one
        pixel when > 0; 0 disables).
    core_erosion_mm:
        The GWR uses the mean HU of each segment's *core*: the segment eroded in-plane by this
        radius (at least one pixel when > 0), which keeps the ROI away from the neighbouring
        structure of the other tissue class when the registration is off by a voxel, as the
        manual method places small ROIs in the centre of each structure (10 mm² circles,
        SJTREM 2013;21:57). A segment whose core would be empty is used whole (warning).
    gwr_cutoff:
        GWR_BG below this is flagged; default 1.18 (Torbey et al., Stroke 2000); 0.5..3.
    bone_hu:
        Skull threshold for skull stripping, HU.
    brain_mask_hu:
        (lower, upper) HU of tissue that may belong to the brain mask.
    registration_spacing_mm:
        Isotropic spacing at which the scan is registered to the template, mm (1..6).
    registration_iterations:
        Maximum optimiser iterations per stage and level.
    min_brain_extent_mm:
        The brain mask must span at least this head-feet extent, mm (the caudate-to-corpus
        callosum range is about 50 mm).
    min_landmark_coverage:
        Each landmark's carried-back volume must reach this fraction of its expected volume
        (atlas volume scaled by the registration), else the scan does not cover it.
    min_registration_dice:
        Dice of the registered template brain mask against the scan's brain mask, within the
        scan's field of view, below which the registration is considered failed.
    min_skull_enclosure:
        Fraction of the brain mask's in-plane outline that must lie within 6 mm of bone
        (:class:`pipelines.brain_gwr.BrainMaskReport`); below it the series is not taken for a
        head CT.
    template_scale_range:
        (lower, upper) scale of the template against the scan's brain along any axis outside
        which the registration is considered failed (adult brains differ by about ±15 % in
        each dimension from Colin27; a 2-year-old's brain is about 80 % of adult size).
    reject_contrast:
        Refuse series whose headers record a contrast agent (contrast raises gray-matter HU).
    atlas_path:
        Alternative atlas asset (``.npz`` as built by ``training/build_brain_atlas.py``).
    """

    protocol = NAME

    parenchyma_hu: HUBand = Field(default=(10.0, 60.0), description="HU kept in the landmarks.")
    erosion_mm: Number = Field(
        default=1.0, ge=0.0, le=10.0, description="In-plane erosion of the in-band mask, mm."
    )
    core_erosion_mm: Number = Field(
        default=2.0, ge=0.0, le=10.0, description="Erosion of each segment's core, mm."
    )
    gwr_cutoff: Number = Field(
        default=DEFAULT_GWR_CUTOFF, ge=0.5, le=3.0,
        description=(
            "Basal-ganglia GWR below which the low-GWR finding is set (default 1.18, Torbey "
            "2000; see docs/pipelines/brain-gwr.md for other published cut-offs)."
        ),
    )
    bone_hu: HU = Field(default=300.0, description="Skull threshold, HU.")
    brain_mask_hu: HUBand = Field(default=(-15.0, 100.0), description="Brain-mask band, HU.")
    registration_spacing_mm: Number = Field(
        default=3.0, ge=1.0, le=6.0, description="Registration spacing, mm."
    )
    registration_iterations: Integer = Field(
        default=100, ge=1, le=10000, description="Optimiser iterations per stage and level."
    )
    min_brain_extent_mm: Number = Field(
        default=50.0, ge=0.0, le=300.0, description="Least head-feet brain extent, mm."
    )
    min_landmark_coverage: Number = Field(
        default=0.7, ge=0.0, le=1.0, description="Least covered fraction of each landmark."
    )
    min_registration_dice: Number = Field(
        default=0.8, ge=0.0, le=1.0, description="Least registration Dice."
    )
    min_skull_enclosure: Number = Field(
        default=0.6, ge=0.0, le=1.0, description="Least skull enclosure of the brain outline."
    )
    template_scale_range: Pair = Field(
        default=(0.6, 1.4), description="Accepted template scale range."
    )
    reject_contrast: Flag = Field(
        default=True, description="Refuse series whose headers record a contrast agent."
    )
    atlas_path: str | None = Field(
        default=None,
        description=(
            "A site-built template/atlas asset (.npz, training/build_brain_atlas.py). Unset: the "
            "shipped asset."
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> BrainGWRParameters:
        check_ordered(self, ("parenchyma_hu", "brain_mask_hu", "template_scale_range"), NAME)
        return self
