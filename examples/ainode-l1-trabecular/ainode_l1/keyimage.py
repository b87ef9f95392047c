"""Key image of the L1 measurement: the axial slice with the ROI beside a small sagittal with L1.

Both panels are resampled to one square pixel size (the finest of the volume's spacings), so the
Secondary Capture's Pixel Spacing holds for both; the layout is drawn with
:func:`pipelines.render.render_key_image_gray` (legend, text panel, research-use disclaimer).
Patient Orientation is left empty: the two panels have different orientations (axial: columns
to the patient's left, rows posterior; sagittal: columns posterior, rows to the feet).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

try:  # the renderer moves to pipelines.outputs (issue 13); accept both while that lands
    from pipelines.outputs.render import apply_window, display_grid, render_key_image_gray
except ImportError:  # pragma: no cover - older core
    from pipelines.render import apply_window, display_grid, render_key_image_gray
from pipelines.spine import Vertebra
from pipelines.types import KeyImage, SegmentDefinition
from pipelines.volume import CTVolume

if TYPE_CHECKING:
    from ainode_l1.method import TrabecularROI

#: Label of the sagittal L1 marker on the key image (display only, not a SEG segment).
LABEL_L1_MARKER = 2

_GAP_PX = 8
_AXIAL_MARGIN_MM = 10.0
_SAGITTAL_ANTERIOR_MM = 40.0
_SAGITTAL_POSTERIOR_MM = 70.0


def _resample(image: np.ndarray, spacing: tuple[float, float], step_mm: float) -> np.ndarray:
    """Nearest-neighbour resampling of a 2-D array to square ``step_mm`` pixels."""
    rows = max(1, round(image.shape[0] * spacing[0] / step_mm))
    cols = max(1, round(image.shape[1] * spacing[1] / step_mm))
    r = np.minimum((np.arange(rows) * image.shape[0] / rows).astype(int), image.shape[0] - 1)
    c = np.minimum((np.arange(cols) * image.shape[1] / cols).astype(int), image.shape[1] - 1)
    return image[np.ix_(r, c)]


def render_l1_key_image(
    volume: CTVolume,
    slice_index: int,
    l1: Vertebra,
    roi: TrabecularROI,
    roi_segment: SegmentDefinition,
    text_lines: list[str],
    source_index: int,
    window_hu: tuple[float, float],
) -> KeyImage:
    """Render the axial slice with the ROI and a sagittal panel with L1 and the slice marked.

    Parameters
    ----------
    volume:
        Canonical volume (``(slices, rows, columns)``, slices feet→head).
    slice_index:
        Canonical index of the measured slice.
    l1:
        L1 from the spine labelling (its slice range is marked on the sagittal panel).
    roi:
        The ROI on the measured slice.
    roi_segment:
        Segment definition of the ROI (colour and legend).
    text_lines:
        Lines for the text panel (the disclaimer is appended by the renderer).
    source_index:
        Index into the volume's datasets of the measured slice's source image.
    window_hu:
        Display window (lower, upper), HU.

    Returns
    -------
    KeyImage
        RGB key image, Pixel Spacing of both panels, no Patient Orientation.
    """
    dz, dr, dc = (float(v) for v in volume.spacing_mm)
    step = min(dz, dr, dc)
    # Axial panel cropped to the body (HU > -500) plus a margin, so the ROI is drawn larger.
    hu_slice = volume.hu[slice_index]
    inside = hu_slice > -500.0
    rows_in, cols_in = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if len(rows_in) == 0:
        rows_in, cols_in = np.arange(hu_slice.shape[0]), np.arange(hu_slice.shape[1])
    margin_r, margin_c = round(_AXIAL_MARGIN_MM / dr), round(_AXIAL_MARGIN_MM / dc)
    a0, a1 = max(0, rows_in[0] - margin_r), min(hu_slice.shape[0], rows_in[-1] + margin_r + 1)
    b0, b1 = max(0, cols_in[0] - margin_c), min(hu_slice.shape[1], cols_in[-1] + margin_c + 1)
    axial = apply_window(hu_slice[a0:a1, b0:b1], window_hu)
    axial_labels = roi.mask[a0:a1, b0:b1].astype(np.uint8) * roi_segment.number

    # Sagittal through the ROI centre column: (slices, rows), flipped so the head is up.
    column = round(roi.centre_rc[1])
    body_rows = np.flatnonzero(roi.body.any(axis=1))
    r0 = max(0, int(body_rows[0] - _SAGITTAL_ANTERIOR_MM / dr))
    r1 = min(volume.hu.shape[1], int(body_rows[-1] + _SAGITTAL_POSTERIOR_MM / dr) + 1)
    sagittal = apply_window(volume.hu[:, r0:r1, column], window_hu)
    sagittal_labels = np.zeros(sagittal.shape, dtype=np.uint8)
    body_r0, body_r1 = int(body_rows[0]) - r0, int(body_rows[-1]) - r0 + 1
    sagittal_labels[l1.first_slice : l1.last_slice + 1, body_r0:body_r1] = LABEL_L1_MARKER
    roi_rows = np.flatnonzero(roi.mask[:, column]) - r0
    sagittal_labels[slice_index, roi_rows] = roi_segment.number

    axial_img = _resample(axial, (dr, dc), step)
    axial_lab = _resample(axial_labels, (dr, dc), step)
    sag_img = _resample(sagittal[::-1], (dz, dr), step)
    sag_lab = _resample(sagittal_labels[::-1], (dz, dr), step)
    # Keep the sagittal panel no taller than the axial one, centred on L1.
    height = axial_img.shape[0]
    if sag_img.shape[0] > height:
        centre = round((volume.hu.shape[0] - 1 - slice_index + 0.5) * dz / step)
        top = int(np.clip(centre - height // 2, 0, sag_img.shape[0] - height))
        sag_img, sag_lab = sag_img[top : top + height], sag_lab[top : top + height]
    rows = max(height, sag_img.shape[0])
    cols = axial_img.shape[1] + _GAP_PX + sag_img.shape[1]
    image = np.zeros((rows, cols), dtype=np.float32)
    labels = np.zeros((rows, cols), dtype=np.uint8)
    image[: axial_img.shape[0], : axial_img.shape[1]] = axial_img
    labels[: axial_lab.shape[0], : axial_lab.shape[1]] = axial_lab
    x = axial_img.shape[1] + _GAP_PX
    image[: sag_img.shape[0], x:] = sag_img
    labels[: sag_lab.shape[0], x:] = sag_lab
    image[:, axial_img.shape[1] : x] = 1.0  # white divider

    marker = SegmentDefinition(
        number=LABEL_L1_MARKER,
        label="L1 (sagittal)",
        description="L1 vertebral body on the sagittal panel (display only)",
        category=roi_segment.category,
        property_type=roi_segment.anatomic_region or roi_segment.property_type,
        anatomic_region=None,
        tracking_id="L1 sagittal marker",
        display_rgb=(60, 170, 255),
    )
    pixels = render_key_image_gray(image, labels, [roi_segment, marker], text_lines,
                                   pixel_spacing_mm=(step, step))
    _, spacing = display_grid((rows, cols), (step, step))
    return KeyImage(pixels_rgb=pixels, source_index=int(source_index), pixel_spacing_mm=spacing,
                    patient_orientation=None)
