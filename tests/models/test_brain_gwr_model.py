"""The brain-gwr landmark network: training on a tiny phantom, and the shipped phantom-only model
end to end through ``ainode run``.

Thresholds (stated in docs/models/brain-gwr.md): on a held-out head phantom (seed 31337, 2 mm
pixels, 3 mm slices, rotated and shifted), the SEG written by ``ainode run`` with the shipped
model ``ainode-brain-gwr-phantom`` has, for every landmark, Dice >= BRAIN_DICE_THRESHOLD against
the phantom's true labels after the same intensity refinement the pipeline applies
(``refine_landmarks``: the SEG holds refined labels), and the GWR_BG within GWR_TOLERANCE of the
GWR computed from the true labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from node.cli import main
from pipelines.validation import dciodvfy_available, run_dciodvfy

SHIPPED_BRAIN = "ainode-brain-gwr-phantom"
#: Minimum Dice per landmark of the shipped model on the held-out phantom (refined labels).
BRAIN_DICE_THRESHOLD = 0.65
#: Largest allowed |GWR_BG(network labels) - GWR_BG(true labels)|.
GWR_TOLERANCE = 0.02


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _all_text(ds: pydicom.Dataset) -> str:
    return "\n".join(str(e.value) for e in ds.iterall() if isinstance(e.value, str))


def test_landmark_network_loss_falls_on_tiny_phantom(tmp_path: Path) -> None:
    """A few iterations of the trainer's loop (``train_network`` with the brain samples, loss,
    transforms and learning rate) on one small 3 mm head phantom, 32^3 patches: the mean Dice-CE
    loss of the last 4 iterations is at least 3 % below that of the first 4."""
    from monai.losses import DiceCELoss

    from models.architectures import DEFAULT_NETWORKS
    from training.train import TrainConfig, train_network
    from training.train_brain import BRAIN_LEARNING_RATE, brain_sample, brain_transforms, head_case

    sample = brain_sample(head_case(5, "small"))
    assert sample.image.shape[0] == 1 and sample.image.shape[1:] == sample.label.shape[1:]
    assert set(np.unique(sample.label)) == set(range(5))  # side-merged classes
    assert 0.0 <= sample.image.min() and sample.image.max() <= 1.0
    arch, args = DEFAULT_NETWORKS["brain-gwr"]["landmarks"]
    args = {**args, "out_channels": 5}
    config = TrainConfig(protocol="brain-gwr", out_dir=tmp_path, iterations=8, batch_size=2,
                         learning_rate=BRAIN_LEARNING_RATE, val_every=4, checkpoint_every=8,
                         device="cpu")
    roi = (32, 32, 32)
    trained = train_network(
        "landmarks", arch, args, [sample], [], config, roi=roi,  # type: ignore[arg-type]
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True, include_background=False,
                                 batch=True),
        transforms=brain_transforms(roi, seed=0))
    losses = [row["loss"] for row in trained.history]
    print("brain-gwr training losses:", losses)
    assert len(losses) == 2
    assert losses[1] < 0.97 * losses[0], losses
    assert (tmp_path / "checkpoints" / "landmarks.pt").is_file()


@pytest.mark.parametrize("seed", [10_010, 10_011])
def test_split_at_midline_restores_sides_of_rotated_heads(seed: int) -> None:
    """Merging the phantom's true labels across sides and splitting them at the midline fitted
    to the corpus callosum gives back the true right/left labels (rotated, shifted heads;
    Dice >= 0.97 per label: measured 0.988-1.0, caudate voxels at the midline can flip)."""
    from models.inference import split_at_midline
    from training.train_brain import MERGE_LUT, head_case

    case = head_case(seed, "small")
    params = case.extra["phantom_parameters"]
    assert max(abs(a) for a in params["rotation_deg"]) > 3.0  # type: ignore[index]
    split = split_at_midline(MERGE_LUT[case.labels])
    for value in range(1, 8):
        assert _dice(split == value, case.labels == value) >= 0.97, value


@pytest.fixture(scope="module")
def held_out_head_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A held-out head phantom (seed 31337, not in the training or evaluation seeds) as DICOM."""
    from training.phantoms.head import make_head_phantom, write_head_series

    phantom = make_head_phantom(seed=31_337, pixel_spacing_mm=2.0, slice_spacing_mm=3.0,
                                field_of_view_mm=230.0, rotation_deg=(6.0, -4.0, 5.0),
                                shift_mm=(4.0, -6.0, 3.0), gm_hu=39.0, wm_hu=31.0,
                                noise_sd_hu=4.0, partial_volume_sigma_mm=0.5)
    directory = tmp_path_factory.mktemp("head") / "series"
    write_head_series(phantom, directory)
    return directory, phantom


def test_shipped_brain_model_through_ainode_run(
    held_out_head_series: tuple[Path, object], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pipelines.brain_gwr import BrainGWRParameters, refine_landmarks
    from training.train_brain import _gwr_bg

    series, phantom = held_out_head_series
    config = tmp_path / "ainode.yaml"
    config.write_text(f"device: cpu\nmodels:\n  brain_gwr: {SHIPPED_BRAIN}\n")
    code = main(["run", str(series), "--protocol", "brain-gwr", "--out", str(tmp_path / "out"),
                 "--config", str(config), "--data-dir", str(tmp_path / "data"), "--json"])
    entry = json.loads(capsys.readouterr().out)[0]
    assert code == 0, entry
    results = entry["results"]
    assert entry["algorithm"].startswith(f"{SHIPPED_BRAIN} ")
    assert results["validation_status"] == "phantom-only"
    assert results["inference_device"] == "cpu" and results["inference_seconds"] > 0

    # (c) a phantom-only model's result carries the warning (job record and SR).
    assert any("phantom-only" in w and SHIPPED_BRAIN in w for w in entry["warnings"])
    sr = pydicom.dcmread(entry["outputs"]["SR"])
    sr_text = _all_text(sr)
    assert SHIPPED_BRAIN in sr_text and "phantom-only" in sr_text

    seg = hd.seg.segread(entry["outputs"]["SEG"])
    assert {s.SegmentAlgorithmName for s in seg.SegmentSequence} == {SHIPPED_BRAIN}
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    # Source frame k of the phantom is Instance Number k + 1 (HFS, identity orientation, slices
    # feet -> head), i.e. canonical slice k.
    uid_of = {}
    for path in series.iterdir():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uid_of[int(ds.InstanceNumber) - 1] = str(ds.SOPInstanceUID)
    referenced = {str(r[2]) for r in seg.get_source_image_uids()}
    slices = [k for k in sorted(uid_of) if uid_of[k] in referenced]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[uid_of[k] for k in slices], combine_segments=True,
        skip_overlap_checks=True)
    labels = np.zeros(phantom.labels.shape, dtype=np.uint8)  # type: ignore[attr-defined]
    labels[slices] = np.asarray(frames)
    truth = refine_landmarks(phantom.hu, phantom.labels, phantom.spacing_mm,  # type: ignore[attr-defined]
                             BrainGWRParameters())
    scores = {v: round(_dice(labels == v, truth == v), 3) for v in range(1, 8)}
    print("brain-gwr e2e Dice (refined labels):", scores, "GWR_BG", results["gwr_bg"])
    assert all(s >= BRAIN_DICE_THRESHOLD for s in scores.values()), scores

    truth_gwr = _gwr_bg(phantom.hu, phantom.labels, phantom.spacing_mm)  # type: ignore[attr-defined]
    assert truth_gwr is not None
    assert abs(results["gwr_bg"] - truth_gwr) <= GWR_TOLERANCE, (results["gwr_bg"], truth_gwr)

    sc = pydicom.dcmread(entry["outputs"]["SC"])
    assert sc.ImageComments.startswith(f"{SHIPPED_BRAIN} ") and "phantom-only" in sc.ImageComments
    if dciodvfy_available():
        for path in entry["outputs"].values():
            assert run_dciodvfy(path).errors == [], path


def test_shipped_brain_card_and_evaluation() -> None:
    """The shipped card verifies, names the 3 mm / 48³ input the adapter uses, and its metrics
    equal the means of the shipped per-case evaluation CSV."""
    import csv

    from models.registry import ZOO_DIR, load_entry

    entry = load_entry(ZOO_DIR / SHIPPED_BRAIN, verify=True)
    card = entry.card
    assert card.protocol == "brain-gwr" and card.validation_status.value == "phantom-only"
    spec = card.network("landmarks")
    assert spec is not None and spec.architecture == "DynUNet"
    assert spec.input["pixel_spacing_mm"] == [3.0, 3.0, 3.0]
    assert [lab["value"] for lab in spec.labels] == list(range(5))  # side-merged classes
    assert spec.input["paired_labels"] == "split-at-midline"
    size = sum(p.stat().st_size for p in (ZOO_DIR / SHIPPED_BRAIN).iterdir())
    assert size < 8 * 1024 * 1024
    with open(ZOO_DIR / SHIPPED_BRAIN / "evaluation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == card.evaluation["cases"]
    mean_caudate = np.mean([float(r["dice_caudate_right"]) for r in rows])
    assert abs(mean_caudate - card.evaluation["metrics"]["dice_caudate_right_mean"]) < 1e-3
