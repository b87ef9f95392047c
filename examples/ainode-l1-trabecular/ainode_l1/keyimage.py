"""Key image of the L1 measurement: the axial slice with the ROI beside a small sagittal with L1.

Described declaratively (:class:`pipelines.types.KeyImageSpec`, two panels); the core's
renderer (:mod:`pipelines.outputs.render`) brings both panels to one square pixel size (so the
Secondary Capture's Pixel Spacing holds for both), draws the overlays, the legend, the text and
the research-use disclaimer. Patient Orientation is left empty: the two panels have different
orientations (axial: columns to the patient's left, rows posterior; sagittal: columns
posterior, rows to the feet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pipelines.spine import Vertebra
from pipelines.types import (
    KeyImageAnnotation,
    KeyImagePanel,
    KeyImageSpec,
    SegmentDefinition,
)
from pipelines.volume import CTVolume

if TYPE_CHECKING:
    from ainode_l1.method import TrabecularROI

#: Label of the sagittal L1 marker on the key image (display only, not a SEG segment).
LABEL_L1_MARKER = 2
L1_MARKER_RGB = (60, 170, 255)

_AXIAL_MARGIN_MM = 10.0
_SAGITTAL_ANTERIOR_MM = 40.0
_SAGITTAL_POSTERIOR_MM = 70.0


def l1_key_image(
    volume: CTVolume,
    slice_index: int,
    l1: Vertebra,
    roi: TrabecularROI,
    roi_segment: SegmentDefinition,
    text_lines: list[str],
    source_index: int,
    window_hu: tuple[float, float],
) -> KeyImageSpec:
    """Describe the axial slice with the ROI and a sagittal panel with L1 and the slice marked.

    Parameters
    ----------
    volume:
        Canonical volume (``(slices, rows, columns)``, slices feet→head, rows
        anterior→posterior, columns right→left).
    slice_index:
        Canonical index of the measured slice.
    l1:
        L1 from the spine labelling (its slice range is marked on the sagittal panel).
    roi:
        The ROI on the measured slice.
    roi_segment:
        Segment definition of the ROI (colour and legend).
    text_lines:
        Lines for the text panel (the renderer appends the disclaimer).
    source_index:
        Index into the volume's datasets of the measured slice's source image.
    window_hu:
        Display window (lower, upper), HU, of both panels.

    Returns
    -------
    pipelines.types.KeyImageSpec
        Two panels (axial left, sagittal right), no Patient Orientation.
    """
    dz, dr, dc = (float(v) for v in volume.spacing_mm)

    # Axial panel cropped to the body (HU > -500) plus a margin, so the ROI is drawn larger.
    hu_slice = volume.hu[slice_index]
    inside = hu_slice > -500.0
    rows_in, cols_in = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if len(rows_in) == 0:
        rows_in, cols_in = np.arange(hu_slice.shape[0]), np.arange(hu_slice.shape[1])
    margin_r, margin_c = round(_AXIAL_MARGIN_MM / dr), round(_AXIAL_MARGIN_MM / dc)
    a0, a1 = max(0, rows_in[0] - margin_r), min(hu_slice.shape[0], rows_in[-1] + margin_r + 1)
    b0, b1 = max(0, cols_in[0] - margin_c), min(hu_slice.shape[1], cols_in[-1] + margin_c + 1)
    axial = KeyImagePanel(
        image=hu_slice[a0:a1, b0:b1],
        pixel_spacing_mm=(dr, dc),
        window_hu=window_hu,
        labels=roi.mask[a0:a1, b0:b1].astype(np.uint8) * roi_segment.number,
    )

    # Sagittal through the ROI centre column: (slices, rows), head up, around the spine, no
    # taller than the axial panel and centred on the measured slice.
    column = round(roi.centre_rc[1])
    body_rows = np.flatnonzero(roi.body.any(axis=1))
    r0 = max(0, int(body_rows[0] - _SAGITTAL_ANTERIOR_MM / dr))
    r1 = min(volume.hu.shape[1], int(body_rows[-1] + _SAGITTAL_POSTERIOR_MM / dr) + 1)
    n_slices = volume.hu.shape[0]
    keep = max(1, min(n_slices, int((a1 - a0) * dr / dz)))
    z0 = int(np.clip(slice_index - keep // 2, 0, n_slices - keep))
    z1 = z0 + keep
    sagittal_hu = volume.hu[z0:z1, r0:r1, column][::-1]
    labels = np.zeros(sagittal_hu.shape, dtype=np.uint8)
    body_r0, body_r1 = int(body_rows[0]) - r0, int(body_rows[-1]) - r0 + 1

    def display_row(k: int) -> int:
        return z1 - 1 - k

    top, bottom = display_row(min(l1.last_slice, z1 - 1)), display_row(max(l1.first_slice, z0))
    labels[max(0, top) : bottom + 1, body_r0:body_r1] = LABEL_L1_MARKER
    labels[display_row(slice_index), np.flatnonzero(roi.mask[:, column]) - r0] = \
        roi_segment.number
    sagittal = KeyImagePanel(
        image=sagittal_hu,
        pixel_spacing_mm=(dz, dr),
        window_hu=window_hu,
        labels=labels,
        annotations=(
            KeyImageAnnotation(row=0.5 * (top + bottom), col=max(0.0, body_r0 - 14.0 / dr),
                               text="L1", colour=L1_MARKER_RGB),
        ),
    )
    marker = SegmentDefinition(
        number=LABEL_L1_MARKER,
        label="L1 (sagittal)",
        description="L1 vertebral body on the sagittal panel (display only)",
        category=roi_segment.category,
        property_type=roi_segment.anatomic_region or roi_segment.property_type,
        anatomic_region=None,
        tracking_id="L1 sagittal marker",
        display_rgb=L1_MARKER_RGB,
    )
    return KeyImageSpec(
        panels=(axial, sagittal),
        segments=(roi_segment, marker),
        text_lines=tuple(text_lines),
        source_index=int(source_index),
        patient_orientation=None,
    )
