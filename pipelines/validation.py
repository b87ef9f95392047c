"""Validation of written DICOM objects with dciodvfy (dicom3tools, David Clunie).

``dciodvfy`` checks an object against its IOD: required modules and attributes (Type 1, 2, 1C,
2C), value representations and enumerated values. It prints one line per finding to standard
error, ``Error - ...`` or ``Warning - ...``, and exits with 0 even when it finds errors, so the
output is parsed. With ``-new`` (dicom3tools 2017 and later; Debian ``dicom3tools`` 1.00) each
line carries the full path of the offending attribute, e.g.
``Error - </PatientPosition(0018,5100)> - Missing attribute for Type 2C Conditional - Module=<GeneralSeries>``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.errors import OutputError

logger = logging.getLogger(__name__)

#: Patient module attributes (group 0010) whose values dciodvfy may quote; they are redacted.
_PATIENT_GROUP = re.compile(r"\((?:0x)?0010,", re.IGNORECASE)
_QUOTED_VALUE = re.compile(r"<[^<>]*>")

#: Seconds after which a dciodvfy run is abandoned.
DCIODVFY_TIMEOUT_S = 120.0


@dataclass
class DciodvfyReport:
    """Findings of one dciodvfy run.

    Attributes
    ----------
    path: pathlib.Path
        The file checked.
    iod: str | None
        The IOD dciodvfy recognised (e.g. ``"Segmentation"``), if it printed one.
    errors: list[str]
        Text after ``Error - `` of each error line.
    warnings: list[str]
        Text after ``Warning - `` of each warning line.
    raw: str
        Complete output (standard output and standard error).
    """

    path: Path
    iod: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    raw: str = ""

    @property
    def ok(self) -> bool:
        """``True`` when dciodvfy reported no errors."""
        return not self.errors


def dciodvfy_available() -> bool:
    """``True`` when the ``dciodvfy`` executable is on ``PATH``."""
    return shutil.which("dciodvfy") is not None


def parse_dciodvfy_output(text: str, path: Path) -> DciodvfyReport:
    """Split dciodvfy output into errors, warnings and the recognised IOD.

    Parameters
    ----------
    text:
        Combined standard output and standard error of ``dciodvfy -new``.
    path:
        The file that was checked.

    Returns
    -------
    DciodvfyReport
        The parsed findings; values quoted on lines about patient attributes are redacted.
    """
    lines = [_redact(line) for line in text.splitlines()]
    report = DciodvfyReport(path=path, raw="\n".join(lines))
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("Error - "):
            report.errors.append(stripped[len("Error - ") :])
        elif stripped.startswith("Warning - "):
            report.warnings.append(stripped[len("Warning - ") :])
        elif stripped and " " not in stripped and report.iod is None:
            # A bare word such as "Segmentation" or "CTImage" names the IOD recognised.
            report.iod = stripped
    return report


def _redact(line: str) -> str:
    """Replace quoted values (``<...>``) on lines about patient attributes by ``<redacted>``.

    dciodvfy quotes offending values, e.g. ``Value dubious for this VR [PN] = <SMITH>``; the
    patient's name, ID or birth date must not reach logs or test output.
    """
    if not _PATIENT_GROUP.search(line):
        return line
    # Keep the attribute path (``</PatientName(0010,0010)[1]>``), redact the values after it.
    head, sep, tail = line.partition("> - ")
    if not sep:
        return _QUOTED_VALUE.sub("<redacted>", line)
    return head + sep + _QUOTED_VALUE.sub("<redacted>", tail)


def run_dciodvfy(path: str | os.PathLike[str]) -> DciodvfyReport:
    """Validate a DICOM Part 10 file with ``dciodvfy -new``.

    Parameters
    ----------
    path:
        The file to check.

    Returns
    -------
    DciodvfyReport
        Errors, warnings and the raw output.

    Raises
    ------
    OutputError
        If dciodvfy is not installed (install the Debian package ``dicom3tools``), the file
        does not exist, or dciodvfy cannot be run or times out.
    """
    file_path = Path(path)
    executable = shutil.which("dciodvfy")
    if executable is None:
        raise OutputError(
            "dciodvfy is not installed; install dicom3tools (Debian/Ubuntu: apt-get install "
            "dicom3tools) to validate output objects"
        )
    if not file_path.is_file():
        raise OutputError(f"{file_path}: no such file to validate")
    try:
        completed = subprocess.run(
            [executable, "-new", str(file_path)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=DCIODVFY_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise OutputError(
            f"dciodvfy did not finish on {file_path} within {DCIODVFY_TIMEOUT_S:.0f} s"
        ) from exc
    except OSError as exc:
        raise OutputError(f"cannot run dciodvfy on {file_path}: {exc}") from exc
    report = parse_dciodvfy_output(completed.stdout + completed.stderr, file_path)
    logger.debug(
        "dciodvfy %s: %s, %d error(s), %d warning(s)",
        file_path.name,
        report.iod,
        len(report.errors),
        len(report.warnings),
    )
    return report
