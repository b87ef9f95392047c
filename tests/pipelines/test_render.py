"""Tests of pipelines.outputs.render: windowing, overlay colours, outlines, geometry and text panel."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import OutputError
from pipelines.outputs.render import (
    OVERLAY_ALPHA,
    apply_window,
    display_grid,
    render_key_image,
    render_key_image_gray,
)
from pipelines.types import SCT_TISSUE, CodedTerm, SegmentDefinition

MUSCLE = SegmentDefinition(
    1,
    "SMA",
    "Skeletal muscle",
    SCT_TISSUE,
    CodedTerm("91727004", "SCT", "Muscle"),
    None,
    "muscle",
    (220, 60, 60),
)
FAT = SegmentDefinition(
    2,
    "SAT",
    "Subcutaneous fat",
    SCT_TISSUE,
    CodedTerm("55603005", "SCT", "Fat"),
    None,
    "sat",
    (240, 210, 60),
)


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """512x512 slice: 40 HU everywhere (mid-grey in the soft-tissue window), two squares."""
    hu = np.full((512, 512), 40.0, dtype=np.float32)
    labels = np.zeros((512, 512), dtype=np.uint8)
    labels[100:200, 100:200] = 1
    labels[300:400, 300:450] = 2
    return hu, labels


def test_apply_window_maps_bounds_to_0_and_1() -> None:
    values = apply_window(
        np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0]), (-160.0, 240.0)
    )
    np.testing.assert_allclose(values, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    with pytest.raises(OutputError, match="window"):
        apply_window(np.zeros(3), (100.0, 100.0))


def test_overlay_blend_and_outline_colours() -> None:
    hu, labels = _phantom()
    image = render_key_image(hu, labels, [MUSCLE, FAT], ["SMA 123.4 cm2"])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[1] == 512 and image.shape[0] > 512  # text panel below the image
    gray = round(0.5 * 255)  # 40 HU in C40/W400
    # Interior of a segment: blended colour (rounding tolerance 1).
    for segment, (row, col) in ((MUSCLE, (150, 150)), (FAT, (350, 370))):
        expected = (1 - OVERLAY_ALPHA) * gray + OVERLAY_ALPHA * np.array(
            segment.display_rgb
        )
        np.testing.assert_allclose(image[row, col], expected, atol=1.0)
    # Outline (the region's border pixels): the segment colour itself.
    np.testing.assert_array_equal(image[100, 150], MUSCLE.display_rgb)
    np.testing.assert_array_equal(image[399, 370], FAT.display_rgb)
    # Background stays grey.
    np.testing.assert_array_equal(image[20, 20], [gray, gray, gray])


def test_text_panel_holds_legend_and_text() -> None:
    hu, labels = _phantom()
    image = render_key_image(hu, labels, [MUSCLE, FAT], ["line one", "line two"])
    panel = image[512:]
    # Legend swatches are drawn in the segment colours.
    colours = {tuple(int(v) for v in px) for px in panel.reshape(-1, 3)}
    assert MUSCLE.display_rgb in colours and FAT.display_rgb in colours
    # White text: research-use disclaimer appended, so >= 3 text rows + legend row.
    white_rows = np.flatnonzero((panel == 255).all(axis=2).any(axis=1))
    assert len(white_rows) > 0
    assert (
        panel.shape[0] >= 4 * 14
    )  # at least legend + 3 lines at the minimum font size
    more = render_key_image(
        hu, labels, [MUSCLE, FAT], ["line one", "line two", "three", "four"]
    )
    assert more.shape[0] > image.shape[0]


def test_disclaimer_not_duplicated() -> None:
    hu, labels = _phantom()
    with_disclaimer = render_key_image(
        hu, labels, [MUSCLE], ["a", "Research use only, not for diagnosis."]
    )
    without = render_key_image(hu, labels, [MUSCLE], ["a"])
    assert with_disclaimer.shape == without.shape


def test_small_and_anisotropic_images_are_resampled() -> None:
    hu = np.full((100, 100), 40.0, dtype=np.float32)
    labels = np.zeros((100, 100), dtype=np.uint8)
    labels[40:60, 40:60] = 1
    # Rows 0.5 mm, columns 1.0 mm: 100 x 100 pixels = 50 mm x 100 mm -> aspect 1:2.
    image = render_key_image(hu, labels, [MUSCLE], ["x"], pixel_spacing_mm=(0.5, 1.0))
    assert image.shape[1] == 512
    picture_rows = 256  # 512 * 50 mm / 100 mm
    shape, spacing = display_grid((100, 100), (0.5, 1.0))
    assert shape == (256, 512)
    np.testing.assert_allclose(spacing, (50 / 256, 100 / 512))
    # The label square (10 mm x 20 mm) keeps its physical aspect: width twice its height.
    overlay = np.all(image[:picture_rows] != image[0, 0], axis=2)
    rows = np.flatnonzero(overlay.any(axis=1))
    cols = np.flatnonzero(overlay.any(axis=0))
    assert (cols[-1] - cols[0] + 1) == pytest.approx(
        2 * (rows[-1] - rows[0] + 1), rel=0.05
    )


def test_gray_variant_and_shape_errors() -> None:
    image = np.linspace(0, 1, 512 * 512, dtype=np.float32).reshape(512, 512)
    labels = np.zeros((512, 512), dtype=np.uint8)
    labels[10:20, 10:20] = 2
    rgb = render_key_image_gray(image, labels, [MUSCLE, FAT], ["radiograph"])
    assert rgb.shape[1] == 512 and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[10, 15], FAT.display_rgb)
    with pytest.raises(OutputError, match="same 2-D"):
        render_key_image_gray(image, labels[:100], [MUSCLE], [])
