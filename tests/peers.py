"""Helpers around the DCMTK command-line tools (storescu, echoscu) for tests with real peers.

DCMTK 3.6.7 ``storescu`` proposes only uncompressed transfer syntaxes unless told otherwise and
then tries to decompress a compressed file itself, which fails for JPEG 2000 (no JPEG 2000 codec
in DCMTK). :func:`storescu` therefore reads each file's transfer syntax, groups the files, and runs
``storescu`` once per group with the matching ``-x?`` proposal option, so compressed files go as
they are.

``storescu`` also refuses files whose SOP Class/Instance UID are encoded with VR UN (e.g.
pydicom-data ``explicit_VR-UN.dcm``: "No SOP Class or Instance UID in file");
:func:`write_dcmtk_readable_copy` writes an explicit-VR copy that DCMTK accepts.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.errors import InvalidDicomError

from node.local_pacs import OrthancPACS, PeerError

#: What to tell a developer or CI job that lacks a peer binary.
SETUP_HINT = (
    "Install the DICOM peers with `bash scripts/setup.sh` (or run the suite with "
    "`bash scripts/test.sh`), or by hand: apt-get install dcmtk orthanc dicom3tools"
)

#: storescu option proposing a compressed transfer syntax (plus all uncompressed ones), by UID.
#: From ``storescu --help`` of DCMTK 3.6.7. Uncompressed syntaxes need no option (the default
#: ``-x=`` proposes them all).
STORESCU_TRANSFER_SYNTAX_OPTIONS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG baseline (8 bit)
    "1.2.840.10008.1.2.4.51": "-xx",  # JPEG extended (12 bit)
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless, first-order prediction (SV1)
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless only
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",  # RLE lossless
    "1.2.840.10008.1.2.1.99": "-xd",  # Deflated explicit VR little endian
}

_EXTRA_BINARY_DIRS = ("/usr/sbin", "/usr/local/sbin")


def running_under_ci() -> bool:
    """Return whether the environment variable ``CI`` is ``true`` (GitHub Actions, GitLab CI...)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def which(name: str) -> str | None:
    """Locate an executable on ``$PATH`` or in ``/usr/sbin`` (where Debian puts Orthanc)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_BINARY_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_binary(name: str) -> str:
    """Return the path of executable ``name``; skip the test if it is absent (fail under CI).

    Parameters
    ----------
    name : str
        Executable name, e.g. ``"storescu"``, ``"Orthanc"``, ``"dciodvfy"``.

    Returns
    -------
    str
        Absolute path of the executable.

    Raises
    ------
    pytest.skip.Exception
        The binary is absent and ``CI`` is not ``true``.
    pytest.fail.Exception
        The binary is absent and ``CI`` is ``true``: CI must have every peer installed.
    """
    path = which(name)
    if path is not None:
        return path
    message = f"'{name}' is not installed (not on $PATH nor in /usr/sbin). {SETUP_HINT}"
    if running_under_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def _expand_files(files: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; directories walked recursively (like ``storescu +sd +r``), sorted."""
    expanded: list[Path] = []
    for item in files:
        path = Path(item)
        if path.is_dir():
            expanded.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            expanded.append(path)
    return expanded


def _transfer_syntax_of(path: Path) -> str | None:
    """Transfer Syntax UID of a DICOM file, or ``None`` for a file that is not DICOM."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError, EOFError):
        return None
    meta = getattr(dataset, "file_meta", None)
    uid = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    return str(uid) if uid else "1.2.840.10008.1.2"


def storescu(
    host: str,
    port: int,
    called_aet: str,
    files: Iterable[str | os.PathLike[str]],
    calling_aet: str = "STORESCU",
    extra_args: Sequence[str] = (),
    timeout_s: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Send DICOM files with DCMTK ``storescu``, proposing each file's own transfer syntax.

    Directories are walked recursively (non-DICOM files are skipped). Files are grouped by
    transfer syntax; ``storescu`` runs once per group with ``-aec called_aet -aet calling_aet``,
    the matching proposal option of :data:`STORESCU_TRANSFER_SYNTAX_OPTIONS` (none for
    uncompressed files) and connection/ACSE timeouts of 10 s.

    Parameters
    ----------
    host, port : str, int
        The Storage SCP.
    called_aet : str
        The SCP's AE title.
    files : iterable of path
        Files and/or directories.
    calling_aet : str
        Our AE title.
    extra_args : sequence of str
        More storescu options, placed before the host (e.g. ``["-v"]``).
    timeout_s : float
        Wall-clock limit for each storescu run.

    Returns
    -------
    subprocess.CompletedProcess
        ``args`` is the list of the commands run; ``returncode`` the first non-zero exit status
        (0 when every run succeeded); ``stdout``/``stderr`` the concatenated outputs.

    Raises
    ------
    ValueError
        No DICOM file was found in ``files``.
    """
    binary = require_binary("storescu")
    groups: dict[str, list[Path]] = {}
    for path in _expand_files(files):
        transfer_syntax = _transfer_syntax_of(path)
        if transfer_syntax is not None:
            groups.setdefault(transfer_syntax, []).append(path)
    if not groups:
        raise ValueError(f"storescu(): no DICOM file among {list(files)!r}")
    commands: list[list[str]] = []
    stdout: list[str] = []
    stderr: list[str] = []
    returncode = 0
    for transfer_syntax, paths in groups.items():
        command = [binary, "-aec", called_aet, "-aet", calling_aet, "-to", "10", "-ta", "10"]
        option = STORESCU_TRANSFER_SYNTAX_OPTIONS.get(transfer_syntax)
        if option is not None:
            command.append(option)
        command += [*extra_args, host, str(port), *(str(p) for p in paths)]
        commands.append(command)
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s,
                                check=False)
        stdout.append(result.stdout)
        stderr.append(result.stderr)
        if returncode == 0 and result.returncode != 0:
            returncode = result.returncode
    return subprocess.CompletedProcess(
        commands,  # type: ignore[arg-type]  # one command per transfer syntax group
        returncode, "".join(stdout), "".join(stderr),
    )


def echoscu(
    host: str,
    port: int,
    called_aet: str,
    calling_aet: str = "ECHOSCU",
    extra_args: Sequence[str] = (),
    timeout_s: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Send a C-ECHO with DCMTK ``echoscu -aec called_aet -aet calling_aet -to 10 -ta 10``.

    Returns
    -------
    subprocess.CompletedProcess
        ``returncode`` 0 when the association was accepted and the echo answered.
    """
    binary = require_binary("echoscu")
    command = [binary, "-aec", called_aet, "-aet", calling_aet, "-to", "10", "-ta", "10",
               *extra_args, host, str(port)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)


def write_dcmtk_readable_copy(source: str | os.PathLike[str],
                              destination: str | os.PathLike[str]) -> Path:
    """Write a copy of a DICOM file with explicit VRs that DCMTK tools accept.

    pydicom replaces VR UN by the dictionary VR of known tags when it reads them; every element
    (sequences included) is visited so that all are converted, and encapsulated Pixel Data is
    given VR OB (PS3.5 A.4). Pixel data stay as they are (no transcoding). Unknown private
    elements stay UN.

    Parameters
    ----------
    source, destination : path
        Input file and where to write the copy.

    Returns
    -------
    Path
        ``destination``.
    """
    dataset = pydicom.dcmread(source)

    def visit(current: pydicom.Dataset) -> None:
        for element in current:  # iterating converts each raw element, resolving UN
            if element.VR == "SQ":
                for item in element.value:
                    visit(item)

    visit(dataset)
    if "PixelData" in dataset and dataset.file_meta.TransferSyntaxUID.is_encapsulated:
        dataset["PixelData"].VR = "OB"
    destination = Path(destination)
    dataset.save_as(destination, enforce_file_format=True)
    return destination


#: Orthanc's DICOMweb plugin as the Debian package ``orthanc-dicomweb`` installs it.
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def orthanc_dicomweb(work_dir: str | os.PathLike[str], *, user: str = "stow",
                     password: str = "stow-secret-1", http_port: int | None = None) -> OrthancPACS:
    """An (unstarted) Orthanc with its DICOMweb plugin at ``/dicom-web/`` and HTTP Basic auth.

    Only fixtures that need STOW-RS use it, so the other tests keep Orthanc's short start-up.
    Its REST calls (start-up probe, :meth:`OrthancPACS.instances`...) send the credentials.

    Parameters
    ----------
    work_dir : path
        Orthanc's working directory.
    user, password : str
        The one registered HTTP user (``RegisteredUsers``).
    http_port : int | None
        HTTP port; ``None`` picks a free one.

    Returns
    -------
    OrthancPACS
        ``dicomweb_url`` is the plugin's base URL once started.

    Raises
    ------
    pytest.skip.Exception, pytest.fail.Exception
        The plugin is not installed (fail under CI), see :func:`require_binary`.
    """
    require_binary("Orthanc")
    if not os.path.isfile(DICOMWEB_PLUGIN):
        message = f"Orthanc's DICOMweb plugin is not installed ({DICOMWEB_PLUGIN}). {SETUP_HINT}"
        if running_under_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    return _OrthancDicomWeb(work_dir, user=user, password=password, http_port=http_port)


class _OrthancDicomWeb(OrthancPACS):
    """:class:`OrthancPACS` with the DICOMweb plugin and HTTP Basic authentication."""

    def __init__(self, work_dir: str | os.PathLike[str], *, user: str, password: str,
                 http_port: int | None) -> None:
        super().__init__(work_dir, http_port=http_port, extra_config={
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "AuthenticationEnabled": True,
            "RegisteredUsers": {user: password},
        })
        self.user, self.password = user, password

    @property
    def dicomweb_url(self) -> str:
        """Base URL of STOW-RS/QIDO-RS/WADO-RS (before ``/studies``)."""
        return f"{self.http_url}/dicom-web"

    def _request(self, path: str, timeout_s: float = 30.0, data: bytes | None = None) -> bytes:
        url = self.http_url + path
        request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            detail = error.read()[:500].decode(errors="replace")
            raise PeerError(f"Orthanc REST {url} answered HTTP {error.code}: {detail}") from error
