"""Key-image rendering: windowed image, coloured tissue overlay, legend and measurement text.

The key image goes into the Secondary Capture (:mod:`pipelines.dicom_outputs`), which every PACS
viewer shows, so it carries everything a reader needs without an SR/SEG-capable viewer: the
segmentation as coloured, outlined regions, a legend with the segment labels, the measurements,
the algorithm name/version/validation status and the research-use disclaimer, printed in a panel
below the image (not over anatomy).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from pipelines.errors import OutputError
from pipelines.types import RESEARCH_USE_DISCLAIMER, SegmentDefinition

logger = logging.getLogger(__name__)

#: Opacity of the segment colour blended over the grayscale image.
OVERLAY_ALPHA = 0.45

#: Soft-tissue window (centre 40 HU, width 400 HU) as (lower, upper) HU; a common abdominal
#: soft-tissue display window, used only for display.
SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)

_PANEL_BACKGROUND = (0, 0, 0)
_TEXT_COLOUR = (255, 255, 255)
_MIN_WIDTH = 512


def apply_window(hu_slice: np.ndarray, window_hu: tuple[float, float]) -> np.ndarray:
    """Map Hounsfield units to 0..1 with a linear window.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` array in Hounsfield units.
    window_hu:
        ``(lower, upper)`` HU; values below map to 0, above to 1.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` ``float32`` in 0..1.

    Raises
    ------
    OutputError
        If ``upper <= lower``.
    """
    lower, upper = (float(v) for v in window_hu)
    if not upper > lower:
        raise OutputError(
            f"display window {window_hu} HU is empty; give (lower, upper) with upper > lower, "
            "e.g. (-160, 240)"
        )
    scaled = (np.asarray(hu_slice, dtype=np.float32) - lower) / (upper - lower)
    return np.clip(scaled, 0.0, 1.0)


def render_key_image(
    hu_slice: np.ndarray,
    label_slice: np.ndarray,
    segments: list[SegmentDefinition],
    text_lines: list[str],
    window_hu: tuple[float, float] = SOFT_TISSUE_WINDOW_HU,
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Render a CT slice with its segmentation, legend and text into an RGB key image.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` Hounsfield units, in display orientation (row 0 at the top).
    label_slice:
        ``(rows, columns)`` ``uint8`` label map on the same grid (0 = background, otherwise a
        :attr:`SegmentDefinition.number`).
    segments:
        Definitions of the labels; each is drawn in its ``display_rgb``.
    text_lines:
        Lines printed below the image (measurements, algorithm name/version/validation status).
        :data:`pipelines.types.RESEARCH_USE_DISCLAIMER` is appended if no line contains it.
    window_hu:
        Display window ``(lower, upper)`` in HU; default soft tissue (C 40, W 400).
    pixel_spacing_mm:
        (row, column) spacing of the slice in mm. Non-square pixels are resampled to square
        pixels so that anatomy is not distorted.

    Returns
    -------
    numpy.ndarray
        ``(rows', columns', 3)`` ``uint8`` RGB. The image part is at least 512 pixels wide
        (upsampled with nearest neighbour otherwise) with a text panel below it.

    Raises
    ------
    OutputError
        If the shapes differ or the window is empty.
    """
    gray = apply_window(hu_slice, window_hu)
    return render_key_image_gray(
        gray, label_slice, segments, text_lines, pixel_spacing_mm=pixel_spacing_mm
    )


def render_key_image_gray(
    image: np.ndarray,
    label_slice: np.ndarray,
    segments: list[SegmentDefinition],
    text_lines: list[str],
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Render an already normalised grayscale image (e.g. a radiograph) with its segmentation.

    Parameters
    ----------
    image:
        ``(rows, columns)`` float in 0..1 (values outside are clipped), 0 = black.
    label_slice:
        ``(rows, columns)`` integer label map on the same grid (0 = background).
    segments:
        Definitions of the labels.
    text_lines:
        Lines printed below the image; the research-use disclaimer is appended if missing.
    pixel_spacing_mm:
        (row, column) spacing in mm; non-square pixels are resampled to square.

    Returns
    -------
    numpy.ndarray
        ``(rows', columns', 3)`` ``uint8`` RGB.

    Raises
    ------
    OutputError
        If ``image`` and ``label_slice`` are not 2-D arrays of the same shape.
    """
    image = np.asarray(image, dtype=np.float32)
    labels = np.asarray(label_slice)
    if image.ndim != 2 or labels.shape != image.shape:
        raise OutputError(
            f"key image: image shape {image.shape} and label shape {labels.shape} must be the "
            "same 2-D (rows, columns) shape; pass one slice and its label slice"
        )
    image, labels = _to_display_grid(image, labels, pixel_spacing_mm)

    gray_u8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.float32)
    rgb = np.repeat(gray_u8[..., None], 3, axis=2)
    by_number = {segment.number: segment for segment in segments}
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if v not in by_number]
    if unknown:
        logger.warning(
            "key image: labels %s have no segment definition; drawn in grey", unknown
        )
    for number in present:
        colour = np.asarray(
            by_number[number].display_rgb if number in by_number else (128, 128, 128),
            dtype=np.float32,
        )
        region = labels == number
        rgb[region] = (1.0 - OVERLAY_ALPHA) * rgb[region] + OVERLAY_ALPHA * colour
        outline = region & ~ndimage.binary_erosion(region)
        rgb[outline] = colour
    picture = np.round(rgb).astype(np.uint8)

    legend = [by_number[n] for n in sorted(by_number) if n in present]
    return _add_text_panel(picture, legend, _with_disclaimer(text_lines))


def _with_disclaimer(text_lines: Sequence[str]) -> list[str]:
    lines = [str(line) for line in text_lines]
    if not any(RESEARCH_USE_DISCLAIMER in line for line in lines):
        lines.append(RESEARCH_USE_DISCLAIMER)
    return lines


def display_grid(
    shape: tuple[int, int], pixel_spacing_mm: tuple[float, float]
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Shape and pixel spacing of the image part of a rendered key image.

    The renderers resample to square pixels at the finer of the two spacings and enlarge images
    narrower than 512 columns to 512 columns (nearest neighbour). Use the returned spacing for
    :attr:`pipelines.types.KeyImage.pixel_spacing_mm`.

    Parameters
    ----------
    shape:
        ``(rows, columns)`` of the input slice.
    pixel_spacing_mm:
        (row, column) spacing of the input slice in mm.

    Returns
    -------
    tuple[tuple[int, int], tuple[float, float]]
        ``(rows, columns)`` of the image part and its (row, column) pixel spacing in mm.

    Raises
    ------
    OutputError
        If a spacing is not positive.
    """
    row_mm, col_mm = (float(v) for v in pixel_spacing_mm)
    if row_mm <= 0 or col_mm <= 0:
        raise OutputError(
            f"key image: pixel spacing {pixel_spacing_mm} mm must be positive"
        )
    rows, cols = shape
    # Square pixels at the finer of the two spacings.
    square_mm = min(row_mm, col_mm)
    out_rows = max(1, round(rows * row_mm / square_mm))
    out_cols = max(1, round(cols * col_mm / square_mm))
    if out_cols < _MIN_WIDTH:
        factor = _MIN_WIDTH / out_cols
        out_rows, out_cols = max(1, round(out_rows * factor)), _MIN_WIDTH
    return (out_rows, out_cols), (rows * row_mm / out_rows, cols * col_mm / out_cols)


def _to_display_grid(
    image: np.ndarray, labels: np.ndarray, pixel_spacing_mm: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample to square pixels and up to at least 512 columns (nearest neighbour)."""
    rows, cols = image.shape
    (out_rows, out_cols), _ = display_grid((rows, cols), pixel_spacing_mm)
    if (out_rows, out_cols) == (rows, cols):
        return image, labels
    row_index = np.minimum(
        (np.arange(out_rows) * rows / out_rows).astype(int), rows - 1
    )
    col_index = np.minimum(
        (np.arange(out_cols) * cols / out_cols).astype(int), cols - 1
    )
    return image[np.ix_(row_index, col_index)], labels[np.ix_(row_index, col_index)]


def _add_text_panel(
    picture: np.ndarray, legend: list[SegmentDefinition], lines: list[str]
) -> np.ndarray:
    """Append a black panel below ``picture`` with a colour legend and the text lines."""
    width = picture.shape[1]
    font_size = max(12, round(width / 36))
    font = ImageFont.load_default(size=font_size)
    line_height = round(font_size * 1.35)
    margin = max(4, font_size // 2)

    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped: list[str] = []
    for line in lines:
        wrapped.extend(_wrap(probe, line, font, width - 2 * margin))

    # Legend: swatch + label, laid out left to right, wrapping to new rows.
    swatch = font_size
    legend_items: list[tuple[int, int, SegmentDefinition]] = []
    x, row = margin, 0
    for segment in legend:
        text_width = probe.textlength(segment.label, font=font)
        item_width = int(swatch + margin // 2 + text_width + 2 * margin)
        if x + item_width > width - margin and x > margin:
            x, row = margin, row + 1
        legend_items.append((x, row, segment))
        x += item_width
    legend_rows = (row + 1) if legend else 0

    panel_height = margin * 2 + line_height * (legend_rows + len(wrapped))
    canvas = Image.new(
        "RGB", (width, picture.shape[0] + panel_height), _PANEL_BACKGROUND
    )
    canvas.paste(Image.fromarray(picture, mode="RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    top = picture.shape[0] + margin
    for x, row, segment in legend_items:
        y = top + row * line_height
        draw.rectangle(
            (x, y + 2, x + swatch, y + 2 + swatch),
            fill=tuple(segment.display_rgb),
            outline=None,
        )
        draw.text(
            (x + swatch + margin // 2, y), segment.label, fill=_TEXT_COLOUR, font=font
        )
    y = top + legend_rows * line_height
    for line in wrapped:
        draw.text((margin, y), line, fill=_TEXT_COLOUR, font=font)
        y += line_height
    return np.asarray(canvas, dtype=np.uint8).copy()


def _wrap(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    max_width: int,
) -> list[str]:
    """Greedy word wrap of one line to ``max_width`` pixels."""
    words = text.split()
    if not words:
        return [""]
    lines: list[str] = []
    current = words[0]
    for word in words[1:]:
        candidate = f"{current} {word}"
        if draw.textlength(candidate, font=font) <= max_width:
            current = candidate
        else:
            lines.append(current)
            current = word
    lines.append(current)
    return lines
