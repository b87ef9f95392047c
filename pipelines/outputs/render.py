"""Key-image rendering: windowed image, coloured tissue overlay, legend and measurement text.

The key image goes into the Secondary Capture (:mod:`pipelines.outputs.sc`), which every PACS
viewer shows, so it carries everything a reader needs without an SR/SEG-capable viewer: the
segmentation as coloured, outlined regions, a legend with the segment labels, the measurements,
the algorithm name/version/validation status and the research-use disclaimer, printed in a panel
below the image (not over anatomy).

Methods describe their key image with :class:`pipelines.types.KeyImageSpec` (pure data);
:func:`render_key_image_spec` draws it. This is the only module of ``pipelines`` that imports PIL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from pipelines.errors import OutputError
from pipelines.types import (
    RESEARCH_USE_DISCLAIMER,
    SOFT_TISSUE_WINDOW_HU,
    KeyImage,
    KeyImageAnnotation,
    KeyImagePanel,
    KeyImageSpec,
    SegmentDefinition,
)

logger = logging.getLogger(__name__)

#: Opacity of the segment colour blended over the grayscale image.
OVERLAY_ALPHA = 0.45

_PANEL_BACKGROUND = (0, 0, 0)
_TEXT_COLOUR = (255, 255, 255)
_MIN_WIDTH = 512
#: Gap in pixels between the panels of a multi-panel key image.
_PANEL_GAP = 4


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
    disclaimer: str = RESEARCH_USE_DISCLAIMER,
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
        Lines printed below the image; ``disclaimer`` is appended if no line contains it.
    pixel_spacing_mm:
        (row, column) spacing in mm; non-square pixels are resampled to square.
    disclaimer:
        The research-use disclaimer.

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
    return _add_text_panel(picture, legend, _with_disclaimer(text_lines, disclaimer))


def _with_disclaimer(
    text_lines: Sequence[str], disclaimer: str = RESEARCH_USE_DISCLAIMER
) -> list[str]:
    lines = [str(line) for line in text_lines]
    if not any(disclaimer in line for line in lines):
        lines.append(disclaimer)
    return lines


def render_key_image_spec(spec: KeyImageSpec) -> KeyImage:
    """Draw a method's key-image description into the RGB key image of the Secondary Capture.

    One panel is windowed (``window_hu``) or clipped to 0..1 (grey images), shown with square
    pixels at least 512 pixels wide, overlaid with its labels and annotations. Several panels
    are first brought to one square pixel spacing (the finest of all panels, nearest
    neighbour), laid out left to right 4 pixels apart on black and vertically centred, then
    drawn as one. The text panel below holds the legend of the segments present, the text
    lines and the disclaimer.

    Parameters
    ----------
    spec:
        The description (panels in display orientation, row 0 at the top).

    Returns
    -------
    pipelines.types.KeyImage
        ``(rows, columns, 3)`` ``uint8`` RGB pixels, the source index and patient orientation
        of ``spec``, and the (row, column) pixel spacing in mm of the image part, or
        ``(0.0, 0.0)`` when a panel's spacing is unknown.

    Raises
    ------
    OutputError
        If there is no panel, a panel's labels do not have the image's 2-D shape, a window is
        empty or a spacing is not positive.
    """
    if not spec.panels:
        raise OutputError(
            "key image: the KeyImageSpec has no panel; give at least one KeyImagePanel"
        )
    greys = [_panel_grey(panel) for panel in spec.panels]
    if len(spec.panels) == 1:
        panel = spec.panels[0]
        image, labels = greys[0]
        spacing = panel.pixel_spacing_mm or (1.0, 1.0)
        annotations = list(panel.annotations)
    else:
        image, labels, spacing, annotations = _compose_panels(spec.panels, greys)
    pixels = render_key_image_gray(
        image,
        labels,
        list(spec.segments),
        list(spec.text_lines),
        pixel_spacing_mm=spacing,
        disclaimer=spec.disclaimer,
    )
    (_, display_cols), display_spacing = display_grid(image.shape, spacing)
    if annotations:
        pixels = _draw_annotations(pixels, annotations, display_cols / image.shape[1])
    known = all(panel.pixel_spacing_mm is not None for panel in spec.panels)
    return KeyImage(
        pixels_rgb=pixels,
        source_index=int(spec.source_index),
        pixel_spacing_mm=display_spacing if known else (0.0, 0.0),
        patient_orientation=spec.patient_orientation,
    )


def _panel_grey(panel: KeyImagePanel) -> tuple[np.ndarray, np.ndarray]:
    """Grey image (0..1) and label map of one panel."""
    image = np.asarray(panel.image, dtype=np.float32)
    if image.ndim != 2:
        raise OutputError(
            f"key image: panel image shape {image.shape} must be 2-D (rows, columns)"
        )
    grey = (
        apply_window(image, panel.window_hu)
        if panel.window_hu is not None
        else np.clip(image, 0.0, 1.0)
    )
    labels = (
        np.zeros(image.shape, dtype=np.uint8)
        if panel.labels is None
        else np.asarray(panel.labels)
    )
    if labels.shape != image.shape:
        raise OutputError(
            f"key image: panel image shape {image.shape} and label shape {labels.shape} must "
            "be the same 2-D (rows, columns) shape"
        )
    return grey, labels


def _compose_panels(
    panels: Sequence[KeyImagePanel], greys: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float], list[KeyImageAnnotation]]:
    """Lay panels out left to right at one square pixel spacing (nearest neighbour)."""
    spacings = [panel.pixel_spacing_mm or (1.0, 1.0) for panel in panels]
    if any(float(v) <= 0 for pair in spacings for v in pair):
        raise OutputError(f"key image: panel pixel spacings {spacings} mm must be positive")
    target = min(float(v) for pair in spacings for v in pair)
    resampled = []
    for (grey, labels), (row_mm, col_mm), panel in zip(greys, spacings, panels, strict=True):
        rows, cols = grey.shape
        out_rows = max(1, round(rows * float(row_mm) / target))
        out_cols = max(1, round(cols * float(col_mm) / target))
        row_index = np.minimum((np.arange(out_rows) * rows / out_rows).astype(int), rows - 1)
        col_index = np.minimum((np.arange(out_cols) * cols / out_cols).astype(int), cols - 1)
        scale_r, scale_c = out_rows / rows, out_cols / cols
        notes = [
            replace(
                note,
                row=note.row * scale_r,
                col=note.col * scale_c,
                line_to_col=None if note.line_to_col is None else note.line_to_col * scale_c,
            )
            for note in panel.annotations
        ]
        resampled.append(
            (grey[np.ix_(row_index, col_index)], labels[np.ix_(row_index, col_index)], notes)
        )
    height = max(grey.shape[0] for grey, _, _ in resampled)
    width = sum(grey.shape[1] for grey, _, _ in resampled) + _PANEL_GAP * (len(resampled) - 1)
    out_grey = np.zeros((height, width), dtype=np.float32)
    out_labels = np.zeros((height, width), dtype=np.int64)
    out_notes: list[KeyImageAnnotation] = []
    x = 0
    for grey, labels, notes in resampled:
        top = (height - grey.shape[0]) // 2
        out_grey[top : top + grey.shape[0], x : x + grey.shape[1]] = grey
        out_labels[top : top + grey.shape[0], x : x + grey.shape[1]] = labels
        out_notes += [
            replace(
                note,
                row=note.row + top,
                col=note.col + x,
                line_to_col=None if note.line_to_col is None else note.line_to_col + x,
            )
            for note in notes
        ]
        x += grey.shape[1] + _PANEL_GAP
    return out_grey, out_labels, (target, target), out_notes


def _draw_annotations(
    pixels: np.ndarray, annotations: Sequence[KeyImageAnnotation], scale: float
) -> np.ndarray:
    """Draw annotations (panel coordinates times ``scale``) on the rendered RGB image."""
    canvas = Image.fromarray(pixels)
    draw = ImageDraw.Draw(canvas)
    size = max(15, round(15 * scale))
    font = ImageFont.load_default(size=size)
    width = max(1, round(scale))
    for note in annotations:
        y, x = note.row * scale, note.col * scale
        colour = tuple(int(v) for v in note.colour)
        if note.line_to_col is not None:
            x1 = note.line_to_col * scale
            # The text is about 0.65 em per character wide; the line starts after it.
            x0 = x + 0.65 * size * len(note.text) if note.text else x
            if note.dashed:
                step = 6 * max(1, round(scale))
                for xs in np.arange(x0, x1, 2 * step):
                    draw.line([(xs, y), (min(xs + step, x1), y)], fill=colour, width=width)
            else:
                draw.line([(x0, y), (x1, y)], fill=colour, width=width)
        if note.text:
            draw.text(
                (x, y - size / 2 if note.line_to_col is not None else y),
                note.text,
                fill=colour,
                font=font,
                stroke_width=1,
                stroke_fill=(0, 0, 0),
            )
    return np.asarray(canvas, dtype=np.uint8).copy()


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
