"""Series -> volume: geometry from the headers, mixed series, undecodable pixel data."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from pipelines.errors import InvalidInputError, InvalidSeriesError, UnsupportedInputError
from pipelines.volume import load_ct_volume, read_instance, read_instances
from training.phantoms.abdomen import make_abdomen_phantom, write_phantom_series


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, list[Path]]:
    phantom = make_abdomen_phantom(n_slices=50, rows=64, columns=64, pixel_spacing_mm=6.0, seed=3)
    files = write_phantom_series(phantom, tmp_path_factory.mktemp("series"), shuffle=True)
    return phantom, files


def test_shuffled_files_give_the_phantom_volume_in_canonical_order(phantom_files) -> None:  # type: ignore[no-untyped-def]
    phantom, files = phantom_files
    volume = load_ct_volume(read_instances(files).datasets)
    assert volume.hu.shape == phantom.hu.shape  # type: ignore[attr-defined]
    assert np.allclose(volume.hu, phantom.hu, atol=0.5)  # type: ignore[attr-defined]
    assert volume.spacing_mm == pytest.approx((5.0, 6.0, 6.0))


def test_localizer_is_dropped_and_mixed_geometry_keeps_the_largest_group(phantom_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, files = phantom_files
    datasets = read_instances(files).datasets
    localizer = copy.deepcopy(datasets[0])
    localizer.SOPInstanceUID = pydicom.uid.generate_uid()
    localizer.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    odd = copy.deepcopy(datasets[1])
    odd.SOPInstanceUID = pydicom.uid.generate_uid()
    odd.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal image in an axial series
    odd.ImagePositionPatient = [0, 500, 0]
    volume = load_ct_volume([*datasets, localizer, odd])
    assert len(volume.datasets) == len(datasets)
    assert any("localizer" in w for w in volume.warnings)
    assert any("mixed geometry" in w for w in volume.warnings)


def test_two_reconstructions_in_one_series_are_refused(phantom_files) -> None:  # type: ignore[no-untyped-def]
    _, files = phantom_files
    datasets = read_instances(files).datasets
    twin = copy.deepcopy(datasets[0])
    twin.SOPInstanceUID = pydicom.uid.generate_uid()
    with pytest.raises(InvalidSeriesError, match="share an Image Position"):
        load_ct_volume([*datasets, twin])


def test_only_localizers_and_wrong_modality_are_refused(phantom_files) -> None:  # type: ignore[no-untyped-def]
    _, files = phantom_files
    ds = read_instance(files[0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    with pytest.raises(UnsupportedInputError, match="only localizer"):
        load_ct_volume([ds])
    ds = read_instance(files[0])
    ds.Modality = "MR"
    with pytest.raises(InvalidSeriesError, match="expected a CT series, got Modality"):
        load_ct_volume([ds])


def test_undecodable_transfer_syntax_names_it(phantom_files) -> None:  # type: ignore[no-untyped-def]
    _, files = phantom_files
    ds = read_instance(files[0])
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64])
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG-2
    with pytest.raises(InvalidInputError, match="MPEG2 .* cannot be decoded: no decoder"):
        load_ct_volume([ds])


def test_corrupt_jpeg2000_is_reported_as_undecodable(real_ct_slice_path: Path) -> None:
    ds = read_instance(real_ct_slice_path)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 100])
    with pytest.raises(InvalidInputError, match="(?s)cannot be decoded .* truncated or corrupt"):
        load_ct_volume([ds])


def test_unreadable_files_are_collected_not_raised(tmp_path: Path, real_ct_slice_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    (tmp_path / "ct.dcm").write_bytes(real_ct_slice_path.read_bytes())
    result = read_instances([tmp_path])
    assert len(result.datasets) == 1
    assert len(result.errors) == 1 and "not a DICOM" in result.errors[0]
