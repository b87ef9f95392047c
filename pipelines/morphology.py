"""Connected-component helpers shared by the methods, each with an explicit connectivity.

Connectivity follows scikit-image's convention (:func:`skimage.measure.label`): ``1`` joins
voxels that share a face (4-connectivity in 2-D, 6-connectivity in 3-D); ``mask.ndim`` joins
voxels that share at least a corner (8-connectivity in 2-D, 26-connectivity in 3-D). There is
no default: every caller states which it means, because the two give different answers for thin
structures (a rib touching a vertebra only at a corner, a one-pixel fat plane between muscles).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ainode_core.errors import PipelineError

FACE = 1
"""Connectivity through shared faces only (4 in 2-D, 6 in 3-D)."""


def full_connectivity(ndim: int) -> int:
    """Connectivity through faces, edges and corners (8 in 2-D, 26 in 3-D) for ``ndim`` axes."""
    return ndim


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if not 1 <= connectivity <= ndim:
        raise PipelineError(
            f"connectivity {connectivity} is not between 1 and the mask's {ndim} dimensions"
        )
    return ndimage.generate_binary_structure(ndim, connectivity)


def label_components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """Label the connected components of a boolean mask.

    Parameters
    ----------
    mask:
        Boolean array of any shape (2-D slice or 3-D volume, any axis order).
    connectivity:
        ``1`` (faces) up to ``mask.ndim`` (faces, edges and corners).

    Returns
    -------
    tuple[numpy.ndarray, int]
        ``int32`` labels of ``mask``'s shape (0 = background, 1..n components) and ``n``.

    Raises
    ------
    PipelineError
        If ``connectivity`` is outside 1..``mask.ndim``.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, count = ndimage.label(mask, structure=_structure(mask.ndim, connectivity))
    return labels, int(count)


def largest_component(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """The largest connected component of ``mask``; an all-false mask if there is none.

    Parameters
    ----------
    mask:
        Boolean array of any shape.
    connectivity:
        ``1`` (faces) up to ``mask.ndim`` (faces, edges and corners).

    Returns
    -------
    numpy.ndarray
        Boolean array of ``mask``'s shape. Ties go to the component with the lowest label
        (first in C order).

    Raises
    ------
    PipelineError
        If ``connectivity`` is outside 1..``mask.ndim``.
    """
    labels, count = label_components(mask, connectivity)
    if count == 0:
        return np.zeros(np.shape(mask), dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)))


def remove_small_components(mask: np.ndarray, min_size: int, connectivity: int) -> np.ndarray:
    """``mask`` without the connected components of fewer than ``min_size`` pixels/voxels.

    Parameters
    ----------
    mask:
        Boolean array of any shape.
    min_size:
        Smallest component kept, in pixels (2-D) or voxels (3-D).
    connectivity:
        ``1`` (faces) up to ``mask.ndim`` (faces, edges and corners).

    Returns
    -------
    numpy.ndarray
        Boolean array of ``mask``'s shape.

    Raises
    ------
    PipelineError
        If ``connectivity`` is outside 1..``mask.ndim``.
    """
    labels, count = label_components(mask, connectivity)
    if count == 0:
        return np.zeros(np.shape(mask), dtype=bool)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    return np.asarray(keep[labels])
