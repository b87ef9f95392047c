"""Typed parameters of ``neonatal-rds`` (its spec: :mod:`pipelines.protocols.neonatal_rds`).

Light on purpose (pydantic only): the spec, the method and the node's settings all import it.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from pipelines.parameters import Flag, Integer, Number, Pair, ProtocolParameters, check_ordered

NAME = "neonatal-rds"


class NeonatalRDSParameters(ProtocolParameters):
    """Parameters of the ``neonatal-rds`` protocol (keys of the node's ``params`` mapping).

    Attributes
    ----------
    working_size_px:
        Longest side (pixels) of the working copy used by the reference method (>= 64).
    median_filter_px:
        Size of the median filter on the lung label map (seed post-processing; working pixels
        for the reference method, source pixels for a network). 1 disables it.
    small_area_fraction:
        Below this total lung area as a fraction of the image, the ±90° rotation fallback runs
        (seed: 30,000 pixels; read as pixels of a 512 x 512 input, 30000 / 512² = 0.114).
    assumed_pixel_spacing_mm:
        Square pixel spacing (mm) to assume when the header has none; ``None``: report areas
        as fractions of the image only.
    neonate_total_area_cm2:
        (low, high) plausible total lung-field area of a neonate, cm² (project estimate, U).
    adult_total_area_cm2:
        (low, high) plausible total lung-field area of an adult, cm² (project estimate, U).
    rotation_offset_fraction:
        Mediastinum offset from the thorax midline, as a fraction of the thorax width, above
        which patient rotation is flagged.
    left_right_area_ratio_range:
        (low, high) left/right lung-field area ratio outside which the fields are flagged as
        asymmetric (project estimate: the left field is smaller, behind the heart; an opacity,
        effusion, pneumothorax or a failed segmentation moves the ratio outside).
    require_chest_pixels:
        When Body Part Examined is missing or unknown, require the pixel check
        (:func:`pipelines.body_region.guess_radiograph_region`) to find a chest.
    rds_probability_threshold:
        Probability at or above which a *validated* model's output is labelled RDS.
    """

    protocol = NAME

    working_size_px: Integer = Field(
        default=512, ge=64, le=4096, description="Longest side of the working copy, pixels."
    )
    median_filter_px: Integer = Field(
        default=5, ge=1, le=51, description="Median filter size on the lung labels (1: none)."
    )
    small_area_fraction: Number = Field(
        default=30000.0 / (512.0 * 512.0), gt=0.0, lt=1.0,
        description="Lung area fraction below which the rotation fallback runs.",
    )
    assumed_pixel_spacing_mm: Number | None = Field(
        default=None, gt=0.0, le=5.0,
        description=(
            "Pixel size to assume when a radiograph has neither a usable Pixel Spacing nor "
            "Imager Pixel Spacing (stated in the report). Unset: areas are given in pixels and "
            "percent of the image only."
        ),
    )
    neonate_total_area_cm2: Pair = Field(
        default=(10.0, 120.0), description="Plausible neonatal total lung area, cm²."
    )
    adult_total_area_cm2: Pair = Field(
        default=(150.0, 900.0), description="Plausible adult total lung area, cm²."
    )
    rotation_offset_fraction: Number = Field(
        default=0.10, gt=0.0, lt=1.0, description="Mediastinal offset flagged as rotation."
    )
    left_right_area_ratio_range: Pair = Field(
        default=(0.6, 1.4), description="Left/right area ratio range outside which flagged."
    )
    require_chest_pixels: Flag = Field(
        default=True, description="Require the pixel check to find a chest when Body Part is unknown."
    )
    rds_probability_threshold: Number = Field(
        default=0.5, ge=0.0, le=1.0, description="Validated model's RDS probability threshold."
    )

    @model_validator(mode="after")
    def _ordered(self) -> NeonatalRDSParameters:
        check_ordered(
            self,
            ("neonate_total_area_cm2", "adult_total_area_cm2", "left_right_area_ratio_range"),
            NAME,
        )
        return self
