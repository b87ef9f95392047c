"""pipelines.morphology: connected components with the connectivity the caller states."""

import numpy as np
import pytest

from ainode_core.errors import PipelineError
from pipelines.morphology import (
    FACE,
    full_connectivity,
    label_components,
    largest_component,
    remove_small_components,
)


def _diagonal_pair() -> np.ndarray:
    """A 3x3 square and a 4-pixel bar that touch the square only at one corner."""
    mask = np.zeros((12, 12), dtype=bool)
    mask[2:5, 2:5] = True  # 9 pixels
    mask[5, 5:9] = True  # 4 pixels, corner-adjacent to (4, 4)
    return mask


def test_connectivity_decides_whether_corner_neighbours_join() -> None:
    mask = _diagonal_pair()
    assert label_components(mask, FACE)[1] == 2
    assert label_components(mask, full_connectivity(2))[1] == 1
    assert largest_component(mask, FACE).sum() == 9
    assert largest_component(mask, full_connectivity(2)).sum() == 13


def test_three_dimensional_corner_neighbours() -> None:
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True
    assert label_components(mask, FACE)[1] == 3
    assert label_components(mask, 2)[1] == 3  # edges do not join a pure diagonal
    assert label_components(mask, full_connectivity(3))[1] == 1


def test_empty_mask_gives_empty_component() -> None:
    empty = np.zeros((5, 6), dtype=bool)
    out = largest_component(empty, FACE)
    assert out.shape == (5, 6) and not out.any()
    assert not remove_small_components(empty, 3, FACE).any()


def test_remove_small_components_keeps_large_ones() -> None:
    rng = np.random.default_rng(7)
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:15, 5:15] = True  # 100 pixels
    for _ in range(5):  # isolated single pixels, far from the square
        r, c = rng.integers(20, 39, size=2)
        mask[r, c] = True
    kept = remove_small_components(mask, min_size=2, connectivity=FACE)
    assert kept.sum() == 100 and kept[5:15, 5:15].all()


def test_connectivity_outside_dimensions_is_refused() -> None:
    with pytest.raises(PipelineError, match="connectivity 3"):
        largest_component(np.ones((3, 3), dtype=bool), 3)
