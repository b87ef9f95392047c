"""Copies of DICOM headers that never change the caller's datasets.

:meth:`pydicom.dataset.Dataset.copy` is shallow: the copy shares the element dictionary with the
original, so deleting an attribute from the copy deletes it from the original too (pydicom
3.0.2). Pipelines receive the caller's datasets and must not alter them; they use
:func:`header_copy` instead.
"""

from __future__ import annotations

import copy as copy_module
import math

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset


def header_copy(ds: Dataset, drop: tuple[str, ...] = ("PixelData",)) -> Dataset:
    """A new dataset with the elements of ``ds`` except the keywords in ``drop``.

    Parameters
    ----------
    ds:
        Source dataset; not modified.
    drop:
        Keywords of top-level elements to leave out (default: Pixel Data).

    Returns
    -------
    pydicom.Dataset
        A dataset with its own element dictionary and its own top-level elements (setting or
        deleting a top-level attribute of the copy leaves ``ds`` unchanged; items inside
        sequences are shared, so do not change those in place), its own copy of the File Meta
        Information and the same original encoding.

    Raises
    ------
    ValueError
        If a keyword in ``drop`` is not a DICOM keyword.
    """
    tags = set()
    for keyword in drop:
        tag = tag_for_keyword(keyword)
        if tag is None:
            raise ValueError(f"{keyword!r} is not a DICOM keyword")
        tags.add(tag)
    copy = Dataset()
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset yields elements, not tags
        if tag not in tags:
            copy[tag] = copy_module.copy(ds[tag])
    if getattr(ds, "file_meta", None) is not None:
        copy.file_meta = copy_module.deepcopy(ds.file_meta)
    if ds.original_encoding[0] is not None:
        copy.set_original_encoding(*ds.original_encoding, character_encoding=ds.original_character_set)
    return copy


def positive_number(value: object) -> float | None:
    """``value`` as a float when it is a finite positive number, else ``None``.

    The one rule for numeric header values that must be positive (Slice Thickness, Spacing
    Between Slices, distances, magnification): missing, unparsable, zero, negative or infinite
    values count as absent.
    """
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 and math.isfinite(number) else None


def positive_pair(value: object) -> tuple[float, float] | None:
    """A two-valued header value (e.g. Pixel Spacing) as two finite positive floats, or ``None``.
    """
    try:
        numbers = [float(v) for v in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return None
    if len(numbers) != 2 or not all(n > 0 and math.isfinite(n) for n in numbers):
        return None
    return numbers[0], numbers[1]
