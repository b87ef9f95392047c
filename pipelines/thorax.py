"""Thoracic spine on chest CT: the vertebral column followed slice by slice, the ribs that
articulate with it, and the thoracic levels T1..T12 counted from the first or the last rib pair.

Canonical axes (:mod:`pipelines.volume`): slices feet->head, rows anterior->posterior, columns
patient right->left. Distances are in mm from the header's spacing.

Method
------
1. Column track (:func:`track_column`): the vertebral column is seeded on the slice where the
   lungs are widest (the largest bone component between the lungs, dorsal to their centre) and
   followed slice by slice upwards and downwards: on each slice the median row and column of the
   bone within a window around the previous centre (``column_half_width_mm`` left and right,
   ``column_half_depth_mm`` ventral and dorsal) is the new centre. The window moves with the
   column, so kyphosis and lordosis and a scoliotic or rotated patient are followed. The track is
   smoothed with a running median over ``track_smoothing_mm``.
2. Ribs (:func:`find_rib_necks`): bone outside the column (laterally more than
   ``rib_band_inner_mm`` from the column centre) split in 3-D connected components per side;
   a component is a rib if it reaches ``rib_min_reach_mm`` lateral of the column (a transverse
   process, notably L1's, does not) and it passes through the paravertebral band (from
   ``rib_band_inner_mm`` to ``rib_band_inner_mm + rib_band_width_mm`` lateral, beside the column)
   where rib necks run from the rib head to the transverse process. Each band crossing is one rib
   neck; crossings of one side closer than ``rib_merge_mm`` in height are one rib (neck and
   transverse process of the same level).
3. Rib pairs: left and right necks matched by height (within half the median rib spacing);
   a rib seen on one side only still counts as a level.
4. Anchors: the top rib pair is rib 1 (T1) when the scan continues at least one rib spacing above
   it with column but no rib (C7 in view) and the lung apices are below the top slice; the bottom
   rib pair is rib 12 (T12) when the scan continues at least one rib spacing below it without a
   rib (L1 in view). With both anchors the count must be 12; 11 or 13 pairs (transitional anatomy,
   or a missed or extra rib) are reported with low confidence: T4 is then counted from T1 and
   T12 is not named. With one anchor the levels are counted from it; with none, no level is
   named.
5. Mid-vertebra: rib N's head articulates with the upper border of vertebra N (superior costal
   facet; Gray's Anatomy, 42nd ed., thoracic vertebrae) and its neck runs nearly horizontally to
   the transverse process of vertebra N, so the middle of vertebra N lies below the neck by about
   a quarter of the rib spacing (the vertebra + disc height). The mid-vertebra slice is the neck
   height minus ``0.25 x`` the median rib spacing; ribs 1, 11 and 12 have one facet on their
   own vertebra's body, so mid-T1, mid-T11 and mid-T12 are at their neck's height.

Limits: cervical ribs and rib fusions are counted as ribs; a first rib hidden by the field of view
(cut laterally) may be missed; a rib fractured near the neck is still counted once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

#: Number of rib pairs of the usual thorax (T1..T12).
USUAL_RIB_PAIRS = 12


@dataclass(frozen=True)
class ThoraxParameters:
    """Geometry of the thoracic spine search, in mm (adult anatomy; thoracic vertebral bodies
    are 25-45 mm wide and 15-25 mm high: Panjabi et al., Spine 1991;16(8):888-901).

    Attributes
    ----------
    bone_threshold_hu:
        Bone (cortex of ribs and vertebrae) above this, HU.
    column_half_width_mm, column_half_depth_mm:
        Window around the previous slice's column centre (left-right, front-back), mm.
    track_smoothing_mm:
        Running-median length of the column track, mm.
    rib_band_inner_mm, rib_band_width_mm:
        Paravertebral band crossed by the rib necks: from this lateral distance of the column
        centre, this wide, mm.
    rib_band_ventral_mm, rib_band_dorsal_mm:
        Front-back extent of the band about the column centre, mm.
    rib_min_reach_mm:
        A rib reaches at least this far lateral of the column centre, mm (a short 12th rib does;
        the transverse processes of T12 and L1 end about 35-40 mm from the midline).
    rib_merge_mm:
        Neck crossings of one rib (3-D component) closer than this in height are one, mm.
    rib_search_lateral_mm:
        Ribs are followed this far lateral of the column (their lateral reach within the box
        tells the short first rib from the second), mm.
    """

    bone_threshold_hu: float = 200.0
    column_half_width_mm: float = 18.0
    column_half_depth_mm: float = 25.0
    track_smoothing_mm: float = 15.0
    rib_band_inner_mm: float = 24.0
    rib_band_width_mm: float = 20.0
    rib_band_ventral_mm: float = 30.0
    rib_band_dorsal_mm: float = 20.0
    rib_min_reach_mm: float = 45.0
    rib_merge_mm: float = 10.0
    rib_search_lateral_mm: float = 130.0


@dataclass(frozen=True)
class RibNeck:
    """One rib where it leaves the column.

    Attributes
    ----------
    side: str
        ``"right"`` or ``"left"`` (patient).
    slice_position: float
        Canonical slice (fractional) of the neck's centre.
    lateral_reach_mm: float
        How far lateral of the column the rib reaches, mm.
    """

    side: str
    slice_position: float
    lateral_reach_mm: float


@dataclass
class ThoracicLevels:
    """Rib-bearing vertebrae found and the levels named.

    Attributes
    ----------
    column_rc: numpy.ndarray
        ``(slices, 2)`` float (row, column) of the column centre per canonical slice, NaN where
        the column was not followed.
    rib_pairs: list[tuple[float, int]]
        (neck slice, sides seen 1 or 2) per rib level, head to foot.
    labels: list[str]
        Thoracic label of each entry of ``rib_pairs`` (same order), empty when not labelled.
    mid_slices: dict[str, int]
        Canonical mid-vertebra slice of each label.
    anchor: str
        ``"T1"``, ``"T12"``, ``"T1+T12"`` (both agree), ``"T1 (T12 disagrees)"`` or ``"none"``.
    confidence: float
        0..1.
    top_in_view, bottom_in_view: bool
        Whether the first / last rib pair's anchor was usable.
    rib_spacing_mm: float
        Median height between consecutive rib necks, mm (one vertebra plus disc).
    apex_slice: int | None
        Highest slice with lung beside the midline (:func:`lung_apex_slice`).
    evidence: list[str]
        Human-readable reasons.
    """

    column_rc: np.ndarray
    rib_pairs: list[tuple[float, int]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    mid_slices: dict[str, int] = field(default_factory=dict)
    anchor: str = "none"
    confidence: float = 0.0
    top_in_view: bool = False
    bottom_in_view: bool = False
    rib_spacing_mm: float = float("nan")
    apex_slice: int | None = None
    evidence: list[str] = field(default_factory=list)


def _seed_column(
    hu: np.ndarray, lungs: np.ndarray, spacing_mm: tuple[float, float, float], bone_hu: float,
    body: np.ndarray | None,
) -> tuple[int, float, float] | None:
    """(slice, row, column) of the column on the slice where the lungs are widest."""
    dr, dc = float(spacing_mm[1]), float(spacing_mm[2])
    area = lungs.reshape(lungs.shape[0], -1).sum(axis=1)
    if not area.any():
        return None
    k = int(np.argmax(area))
    lung_r, lung_c = np.nonzero(lungs[k])
    centre_r, centre_c = float(lung_r.mean()), float(lung_c.mean())
    bone = hu[k] > bone_hu
    if body is not None:
        bone &= body[k]
    bone = ndimage.binary_closing(bone, structure=np.ones((3, 3), dtype=bool))
    lab, n = ndimage.label(bone)
    if n == 0:
        return None
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones(lab.shape), lab, index)
    centres = ndimage.center_of_mass(bone, lab, index)
    best, best_area = None, 0.0
    lung_half_width_mm = 0.5 * (lung_c.max() - lung_c.min()) * dc
    for (cr, cc), a in zip(centres, areas, strict=True):
        # Between the lungs (a third of their half-width of the midline), dorsal of their centre.
        if abs(cc - centre_c) * dc < lung_half_width_mm / 3 and cr > centre_r and a > best_area:
            best, best_area = (cr, cc), float(a)
    if best is None or best_area * dr * dc < 100.0:
        return None
    return k, float(best[0]), float(best[1])


def track_column(
    hu: np.ndarray, lungs: np.ndarray, spacing_mm: tuple[float, float, float],
    body: np.ndarray | None = None, params: ThoraxParameters | None = None,
) -> np.ndarray:
    """Column centre (row, column) on every canonical slice (step 1 of the module docstring).

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` HU, canonical HPL.
    lungs:
        ``(slices, rows, columns)`` bool lung mask (for the seed).
    body:
        Optional ``(slices, rows, columns)`` bool body outline (excludes the table).
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        Search geometry.

    Returns
    -------
    numpy.ndarray
        ``(slices, 2)`` float (row, column); NaN rows where the column was lost.
    """
    p = params or ThoraxParameters()
    dz, dr, dc = (float(s) for s in spacing_mm)
    n = hu.shape[0]
    track = np.full((n, 2), np.nan)
    seed = _seed_column(hu, lungs, spacing_mm, p.bone_threshold_hu, body)
    if seed is None:
        return track
    k0, r0, c0 = seed
    # The reference in depth is the anterior border of the vertebral body in the midline (a sharp
    # edge; the posterior elements would drag a centroid dorsally); the body centre lies
    # ``offset`` behind it, measured on the seed slice.
    strip = max(1, round(4.0 / dc))
    hw = max(2, round(p.column_half_width_mm / dc))
    before, after = round(15.0 / dr), round(40.0 / dr)

    def anterior_border(k: int, r: float, c: float, before: int = before) -> int | None:
        ra, rb = max(0, round(r) - before), min(hu.shape[1], round(r) + after)
        ca, cb = max(0, round(c) - strip), min(hu.shape[2], round(c) + strip + 1)
        bone = hu[k, ra:rb, ca:cb] > p.bone_threshold_hu
        if body is not None:
            bone &= body[k, ra:rb, ca:cb]
        hits = np.flatnonzero(bone.mean(axis=1) >= 0.5)
        return None if len(hits) == 0 else int(hits[0]) + ra

    front0 = anterior_border(k0, r0, c0, before=round(40.0 / dr))
    if front0 is None:
        return track
    offset = max(r0 - front0, 5.0 / dr)
    for step in (1, -1):
        front, c = float(front0), c0
        k = k0 if step == 1 else k0 - 1
        lost = 0
        while 0 <= k < n:
            found = anterior_border(k, front, c)
            if found is not None and abs(found - front) * dr <= 2.0 * dz + 2.0:
                front = float(found)
                ra, rb = round(front), min(hu.shape[1], round(front + 2 * offset) + 1)
                ca, cb = max(0, round(c) - hw), min(hu.shape[2], round(c) + hw + 1)
                window = hu[k, ra:rb, ca:cb] > p.bone_threshold_hu
                if body is not None:
                    window &= body[k, ra:rb, ca:cb]
                cols = np.nonzero(window)[1]
                if len(cols):
                    c_new = float(np.median(cols)) + ca
                    limit_c = 2.0 * dz / dc
                    c = c + float(np.clip(c_new - c, -limit_c, limit_c))
                lost = 0
            else:
                lost += 1
                if lost * dz > 30.0:
                    break
            track[k] = (front + offset, c)
            k += step
    # Running median.
    half = max(1, round(0.5 * p.track_smoothing_mm / dz))
    valid = ~np.isnan(track[:, 0])
    smooth = track.copy()
    for k in np.flatnonzero(valid):
        window = track[max(0, k - half) : k + half + 1]
        window = window[~np.isnan(window[:, 0])]
        smooth[k] = np.median(window, axis=0)
    return smooth


def find_rib_necks(
    hu: np.ndarray, body: np.ndarray | None, column_rc: np.ndarray,
    spacing_mm: tuple[float, float, float], params: ThoraxParameters | None = None,
) -> list[RibNeck]:
    """Ribs leaving the column, per side (step 2 of the module docstring).

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` HU, canonical HPL.
    body:
        ``(slices, rows, columns)`` bool body outline, or ``None``.
    column_rc:
        ``(slices, 2)`` column track (:func:`track_column`).
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        Search geometry.

    Returns
    -------
    list[RibNeck]
        Sorted head to foot.
    """
    p = params or ThoraxParameters()
    dz, dr, dc = (float(s) for s in spacing_mm)
    valid = np.flatnonzero(~np.isnan(column_rc[:, 0]))
    if len(valid) == 0:
        return []
    ka, kb = int(valid[0]), int(valid[-1]) + 1
    # Work on a box around the column: ventral rib_band_ventral_mm + 20 mm, dorsal
    # rib_band_dorsal_mm + 20 mm, and rib_search_lateral_mm each side.
    reach_px = p.rib_search_lateral_mm / dc
    ca = max(0, int(np.nanmin(column_rc[ka:kb, 1]) - reach_px))
    cb = min(hu.shape[2], int(np.nanmax(column_rc[ka:kb, 1]) + reach_px) + 1)
    ra = max(0, int(np.nanmin(column_rc[ka:kb, 0]) - (p.rib_band_ventral_mm + 20.0) / dr))
    rb = min(hu.shape[1], int(np.nanmax(column_rc[ka:kb, 0])
                              + (p.rib_band_dorsal_mm + 20.0) / dr) + 1)
    bone = hu[ka:kb, ra:rb, ca:cb] > p.bone_threshold_hu
    if body is not None:
        bone &= body[ka:kb, ra:rb, ca:cb]
    cols = np.arange(ca, cb, dtype=float)
    rows = np.arange(ra, rb, dtype=float)
    # Lateral distance (mm, positive to the patient's left) and depth (mm, positive dorsal).
    lat = (cols[None, :] - column_rc[ka:kb, 1:2]) * dc  # (slices, columns)
    dep = (rows[None, :] - column_rc[ka:kb, 0:1]) * dr  # (slices, rows)
    necks: list[RibNeck] = []
    inner, outer = p.rib_band_inner_mm, p.rib_band_inner_mm + p.rib_band_width_mm
    depth_ok = (dep > -p.rib_band_ventral_mm) & (dep < p.rib_band_dorsal_mm)
    centre_col = float(np.nanmedian(column_rc[ka:kb, 1]))
    for side, sign in (("right", -1.0), ("left", 1.0)):
        side_lat = sign * lat  # (slices, columns), positive away from the column on this side
        outside = bone & (side_lat > inner)[:, None, :]
        lab, n = ndimage.label(outside)
        if n == 0:
            continue
        # Lateral reach of each component from its bounding box.
        reach = np.zeros(n)
        for i, box in enumerate(ndimage.find_objects(lab)):
            if box is None:
                continue
            far = box[2].start if sign < 0 else box[2].stop - 1
            reach[i] = sign * (far + ca - centre_col) * dc
        ribs = np.flatnonzero(reach >= p.rib_min_reach_mm) + 1
        is_rib = np.zeros(n + 1, dtype=bool)
        is_rib[ribs] = True
        band = (outside & (side_lat < outer)[:, None, :] & depth_ok[:, :, None]
                & is_rib[lab])
        blab, bn = ndimage.label(band)
        if bn == 0:
            continue
        index = np.arange(1, bn + 1)
        sizes = ndimage.sum_labels(np.ones(blab.shape, dtype=np.uint8), blab, index)
        centres = ndimage.center_of_mass(band, blab, index)
        owner = ndimage.maximum(lab, blab, index)
        min_voxels = 20.0 / (dz * dr * dc)  # 20 mm3: not a speck
        found = sorted(
            (float(cz) + ka, float(reach[int(o) - 1]), int(o))
            for (cz, _, _), s, o in zip(centres, sizes, owner, strict=True) if s >= min_voxels
        )
        # Crossings of one rib (one 3-D component) closer than rib_merge_mm are one rib (neck
        # and transverse process of one level); crossings of two different components are two
        # ribs however close: the necks of the first and second ribs cross the band only 5-10 mm
        # apart (the first rib slopes steeply down from T1, the second leaves T2 almost level).
        merged: list[tuple[float, float, int]] = []
        for z, r, o in found:
            close = [i for i, (zm, _, om) in enumerate(merged)
                     if om == o and (z - zm) * dz < p.rib_merge_mm]
            if close:
                i = close[-1]
                merged[i] = (0.5 * (merged[i][0] + z), max(merged[i][1], r), o)
            else:
                merged.append((z, r, o))
        necks += [RibNeck(side, z, r) for z, r, _ in merged]
    return sorted(necks, key=lambda neck: -neck.slice_position)


def pair_ribs(necks: list[RibNeck], dz: float) -> tuple[list[tuple[float, int]], float]:
    """Match left and right necks by height (step 3): ``(slice, sides seen)`` head to foot and
    the median rib spacing (mm)."""
    triples, spacing = _pair(necks, dz)
    return [(z, sides) for z, sides, _ in triples], spacing


def _pair(necks: list[RibNeck], dz: float) -> tuple[list[tuple[float, int, float]], float]:
    """:func:`pair_ribs` with the mean lateral reach (mm) of each pair."""
    by_side = {side: sorted((n for n in necks if n.side == side),
                            key=lambda n: -n.slice_position) for side in ("right", "left")}
    spacings = [abs(a.slice_position - b.slice_position) * dz
                for s in by_side.values() for a, b in zip(s, s[1:])]
    spacing = float(np.median(spacings)) if spacings else float("nan")
    tolerance = 0.5 * spacing / dz if spacings else 10.0 / dz
    right, left = list(by_side["right"]), list(by_side["left"])
    pairs: list[tuple[float, int, float]] = []
    while right or left:
        if right and left and abs(right[0].slice_position - left[0].slice_position) <= tolerance:
            a, b = right.pop(0), left.pop(0)
            pairs.append((0.5 * (a.slice_position + b.slice_position), 2,
                          0.5 * (a.lateral_reach_mm + b.lateral_reach_mm)))
        elif right and (not left or right[0].slice_position > left[0].slice_position):
            a = right.pop(0)
            pairs.append((a.slice_position, 1, a.lateral_reach_mm))
        else:
            a = left.pop(0)
            pairs.append((a.slice_position, 1, a.lateral_reach_mm))
    return pairs, spacing


def lung_apex_slice(
    lungs: np.ndarray, column_rc: np.ndarray, spacing_mm: tuple[float, float, float],
    midline_mm: float = 20.0,
) -> int | None:
    """Highest canonical slice holding lung beside the midline (the trachea, which joins the
    lungs at the carina and runs up the neck in the midline, is not lung apex).

    Parameters
    ----------
    lungs:
        ``(slices, rows, columns)`` bool air regions accepted as lung (may include the airway).
    column_rc:
        ``(slices, 2)`` column track (NaN where unknown).
    spacing_mm:
        (slice, row, column) spacing, mm.
    midline_mm:
        Regions of a slice whose centre lies within this lateral distance of the column are
        airway (trachea 15-25 mm wide), not lung, mm.

    Returns
    -------
    int | None
        ``None`` when there is no lung.
    """
    dc = float(spacing_mm[2])
    n = lungs.shape[0]
    with_air = np.flatnonzero(lungs.reshape(n, -1).any(axis=1))
    if len(with_air) == 0:
        return None
    known = ~np.isnan(column_rc[:, 1])
    fallback = float(np.nanmedian(column_rc[:, 1])) if known.any() else lungs.shape[2] / 2
    for k in with_air[::-1]:
        centre = column_rc[k, 1] if known[k] else fallback
        lab, m = ndimage.label(lungs[k])
        cols = ndimage.center_of_mass(lungs[k], lab, np.arange(1, m + 1))
        if any(abs(c - centre) * dc > midline_mm for _, c in cols):
            return int(k)
    return int(with_air[-1])


def label_thoracic_levels(
    hu: np.ndarray, lungs: np.ndarray, spacing_mm: tuple[float, float, float],
    body: np.ndarray | None = None, params: ThoraxParameters | None = None,
) -> ThoracicLevels:
    """Count the rib-bearing vertebrae and name T1..T12 (steps 1-5 of the module docstring).

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` HU, canonical HPL (feet->head, anterior->posterior,
        right->left).
    lungs:
        ``(slices, rows, columns)`` bool lung mask.
    spacing_mm:
        (slice, row, column) spacing, mm.
    body:
        Optional ``(slices, rows, columns)`` bool body outline.
    params:
        Search geometry.

    Returns
    -------
    ThoracicLevels
        Never raises for missing anatomy: the evidence says what was not found.
    """
    p = params or ThoraxParameters()
    dz = float(spacing_mm[0])
    n = hu.shape[0]
    column = track_column(hu, lungs, spacing_mm, body, p)
    result = ThoracicLevels(column_rc=column)
    valid = np.flatnonzero(~np.isnan(column[:, 0]))
    if len(valid) == 0:
        result.evidence.append("vertebral column not found between the lungs")
        return result
    result.evidence.append(f"column followed over slices {valid[0]}-{valid[-1]} "
                           f"({(valid[-1] - valid[0] + 1) * dz:.0f} mm)")
    necks = find_rib_necks(hu, body, column, spacing_mm, p)
    triples, spacing = _pair(necks, dz)
    pairs = [(z, sides) for z, sides, _ in triples]
    result.rib_pairs, result.rib_spacing_mm = pairs, spacing
    n_right = sum(1 for x in necks if x.side == "right")
    n_left = sum(1 for x in necks if x.side == "left")
    result.evidence.append(f"{len(pairs)} rib levels ({n_right} right, {n_left} left ribs "
                           f"leaving the column), median spacing {spacing:.1f} mm")
    if len(pairs) < 2 or not np.isfinite(spacing):
        result.evidence.append("fewer than two rib levels: no thoracic level named")
        return result
    spacing_sl = spacing / dz
    top, bottom = pairs[0][0], pairs[-1][0]
    apex = lung_apex_slice(lungs, column, spacing_mm)
    result.apex_slice = apex
    apex_in_view = apex is not None and apex < n - 1
    # Top anchor (rib 1): the lung apex is in view and the pleural dome reaches the first rib's
    # neck (Gray's Anatomy: the cervical pleura rises to the neck of the first rib), so the
    # highest rib found lies within one rib spacing below the apex (a missed first rib would put
    # it a spacing lower still), and the column continues above it (C7 in view).
    column_above = valid[-1] - top
    apex_gap = (apex - top) if apex is not None else float("nan")
    result.top_in_view = bool(apex_in_view and -0.5 * spacing_sl <= apex_gap <= spacing_sl
                              and column_above >= 0.5 * spacing_sl)
    # Bottom anchor (rib 12): the column continues at least one rib spacing below the last rib
    # without another rib (L1 in view).
    column_below = bottom - valid[0]
    result.bottom_in_view = bool(column_below >= spacing_sl)
    result.evidence.append(
        f"highest rib at slice {top:.0f}, column continues {column_above * dz:.0f} mm above it; "
        + (f"lung apex at slice {apex} ({apex_gap * dz:.0f} mm above that rib)" if apex_in_view
           else "lung apices reach the top of the series")
        + f"; lowest rib at slice {bottom:.0f}, column continues {column_below * dz:.0f} mm below")
    # Shape of the first rib (Gray's Anatomy: the shortest and most curved rib, a tight ring
    # under the clavicle): the highest rib found reaches less far lateral than the next.
    first_short = False
    if len(triples) >= 3:
        top_reach = triples[0][2]
        next_reach = 0.5 * (triples[1][2] + triples[2][2])
        first_short = bool(top_reach < 0.85 * next_reach)
        result.evidence.append(
            f"highest rib reaches {top_reach:.0f} mm lateral of the column, the next two "
            f"{next_reach:.0f} mm: " + ("short like a first rib" if first_short else
                                         "not shorter than the ribs below it"))
    if apex_in_view and apex_gap > spacing_sl:
        result.evidence.append(
            f"the lung apex lies {apex_gap * dz:.0f} mm above the highest rib found (more than "
            "one rib spacing): the first rib was probably missed, so levels are not counted "
            "from the top")
    count = len(pairs)
    names: list[str] = []
    if result.top_in_view and result.bottom_in_view:
        names = [f"T{i + 1}" for i in range(count)]
        if count == USUAL_RIB_PAIRS:
            result.anchor, result.confidence = "T1+T12", 0.95 if first_short else 0.9
            result.evidence.append("12 rib pairs: counts from the first rib (T1) and from the "
                                   "last rib (T12) agree")
        else:
            result.anchor, result.confidence = "T1 (T12 disagrees)", 0.3
            result.evidence.append(
                f"{count} rib levels from the first to the last rib instead of 12 (transitional "
                "anatomy, a cervical or missing rib, or a rib missed or split by the method): "
                "levels counted from T1; T12 not named")
            names = [name for name in names if int(name[1:]) < USUAL_RIB_PAIRS]
            names += [""] * (count - len(names))
    elif result.top_in_view:
        result.anchor, result.confidence = "T1", 0.8 if first_short else 0.6
        names = [f"T{i + 1}" if i < USUAL_RIB_PAIRS else "" for i in range(count)]
        result.evidence.append("first rib pair in view: levels counted down from T1 (the last "
                               "rib pair is not in view, no cross-check)")
    elif result.bottom_in_view:
        result.anchor, result.confidence = "T12", 0.7
        names = [f"T{USUAL_RIB_PAIRS - count + i + 1}" if USUAL_RIB_PAIRS - count + i >= 0
                 else "" for i in range(count)]
        result.evidence.append("last rib pair in view: levels counted up from T12 (the first "
                               "rib pair is not in view, no cross-check)")
    else:
        result.evidence.append("neither the first nor the last rib pair is recognisably in "
                               "view: no thoracic level named")
    result.labels = names
    for (z, _), name in zip(pairs, names or [""] * count, strict=True):
        if name:
            # Ribs 1, 11 and 12 have a single facet on their own vertebra's body (Gray's
            # Anatomy): their neck lies at the middle of that vertebra, not at its upper border.
            offset = 0.0 if name in ("T1", "T11", "T12") else 0.25 * spacing_sl
            mid = round(z - offset)
            if 0 <= mid < n:
                result.mid_slices[name] = int(mid)
    return result
