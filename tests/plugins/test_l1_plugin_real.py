"""The L1 plug-in on the real CT series of the corpus (``../shared/realdata``, README there).

No real series in the corpus shows L1 (checked by running the spine labelling on each):

* ``abdomen-ct-upper-siemens``: 20 slices of the upper abdomen at T11/T12 (TotalSegmentator's
  automatic labels there: T11 and T12 only); the lowest vertebra in view bears ribs.
* ``chest-ct-lidc-0314``: whole chest CT down to the upper abdomen; every vertebra in view bears
  ribs (the ribs reach the caudal end of the scan).

So the honest result is a refusal that names what is in view (rib-bearing, thoracic vertebrae)
and says what to send; the job must fail as an input problem (not retried), with no outputs.
Attribution: TotalSegmentator repository (Apache-2.0); LIDC-IDRI-0314 (TCIA, CC BY 3.0;
Armato et al., Med Phys 2011;38:915-931).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from realdata_corpus import case_path, dicom_files, run_case

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", ["abdomen-ct-upper-siemens", "chest-ct-lidc-0314"])
def test_real_series_without_l1_are_refused_naming_the_vertebrae_in_view(
    l1_plugin_site: Path, tmp_path: Path, case: str,
) -> None:
    files = dicom_files(case_path(case))
    outcome = run_case("l1-trabecular-attenuation", files, tmp_path / "out")
    assert not outcome.ok
    assert outcome.error_kind == "input", outcome.error
    error = str(outcome.error)
    assert "L1 is not in the scanned range" in error
    assert "thoracic spine only" in error
    assert "rib-bearing (slices" in error  # the vertebrae in view, with their slices
    assert "Send a CT that covers the thoracolumbar junction" in error
    assert outcome.outputs == []
