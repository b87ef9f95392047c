"""Running one job: read the series, run its protocol, write and check the DICOM outputs.

:func:`execute_job` is a pure function of files in and files out; it never touches the network or
the job database. The local runner calls it in a child process (:func:`child_main`), so a
crashing or hanging pipeline only takes down that child; ``ainode run`` calls it in-process.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ainode_core.errors import AINodeError, InvalidInputError, OutputError

logger = logging.getLogger(__name__)


@dataclass
class JobSpec:
    """Everything a worker needs to run one job (JSON-serialisable)."""

    job_id: int
    protocol: str
    files: list[str]
    out_dir: str
    params: dict[str, Any] = field(default_factory=dict)
    validate_outputs: bool = True
    software_version: str = "0"
    device: str = "auto"
    log_level: str = "INFO"
    #: Model selection and inference settings (:meth:`node.config.Settings.model_options`);
    #: ``None`` = the protocol's reference method.
    model: dict[str, Any] | None = None
    #: What the output UIDs derive from: ``"study"`` or ``"series"`` (the node's completion).
    output_scope: str = "series"


@dataclass
class OutputFile:
    """One DICOM object written by a job."""

    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    path: str


@dataclass
class JobOutcome:
    """What a job produced, or why it failed.

    ``error_kind`` is ``"input"`` for problems with the received data (never retried),
    ``"pipeline"`` for a pipeline that failed on accepted input, ``"internal"`` for bugs and
    crashes (retried once).
    """

    ok: bool
    error: str | None = None
    error_kind: str | None = None
    algorithm: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    outputs: list[OutputFile] = field(default_factory=list)

    def to_json(self) -> str:
        """JSON text of the outcome."""
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> JobOutcome:
        """Parse :meth:`to_json` output."""
        data = json.loads(text)
        data["outputs"] = [OutputFile(**o) for o in data.get("outputs", [])]
        return cls(**data)


def read_series_files(files: Sequence[str]) -> tuple[list[Any], list[str]]:
    """Read the files of a series; unreadable files become warnings unless none is readable.

    Repairs made while reading (:func:`pipelines.volume.read_instance_with_warnings`) are
    returned among the warnings, once per kind with the number of files concerned.

    Raises
    ------
    InvalidInputError
        If no file can be read.
    """
    from pipelines.volume import read_instance_with_warnings

    datasets = []
    problems = []
    repairs: dict[str, int] = {}
    for path in files:
        try:
            ds, warnings = read_instance_with_warnings(path)
            check_pixel_data(ds)
            datasets.append(ds)
            for warning in warnings:
                repairs[warning] = repairs.get(warning, 0) + 1
        except InvalidInputError as exc:
            problems.append(str(exc))
    problems.extend(
        f"{warning} ({count} of {len(files)} files)" for warning, count in repairs.items()
    )
    if not datasets:
        raise InvalidInputError(
            "no readable image in the series: " + "; ".join(problems[:3])
            + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
        )
    return datasets, problems


def check_pixel_data(ds: Any) -> None:
    """Check that an image has complete pixel data of a size that may be decoded.

    Uncompressed Pixel Data must hold Rows x Columns x Samples per Pixel x Number of Frames x
    Bits Allocated / 8 bytes (PS3.5 §8.1.1). Any image, compressed or not, whose declared decoded
    size exceeds ``max_image_mb`` is refused here, before anything is decoded
    (:func:`pipelines.volume.check_image_size`).

    Raises
    ------
    InvalidInputError
        If Pixel Data is absent from an image, shorter than the header says (a truncated
        object), or declares more decoded bytes than ``max_image_mb``.
    """
    from pipelines.volume import check_image_size

    if "PixelData" not in ds:
        if "Rows" in ds:
            raise InvalidInputError(
                f"SOP Instance UID {ds.SOPInstanceUID}: image without Pixel Data"
            )
        return
    check_image_size(ds)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    try:
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel", 1))
            * int(ds.get("NumberOfFrames", 1) or 1)
            * int(ds.BitsAllocated)
            // 8
        )
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"SOP Instance UID {ds.SOPInstanceUID}: image pixel description incomplete ({exc})"
        ) from exc
    actual = len(ds.PixelData)
    if actual < expected:
        raise InvalidInputError(
            f"SOP Instance UID {ds.SOPInstanceUID}: Pixel Data is truncated ({actual} of "
            f"{expected} bytes); re-send the image from the modality or PACS"
        )


def execute_job(spec: JobSpec) -> JobOutcome:
    """Run a job in this process.

    Parameters
    ----------
    spec:
        The job: protocol, input files, output directory, parameters.

    Returns
    -------
    JobOutcome
        ``ok`` with the written outputs, or the error and its kind. Never raises for errors in
        the input or the pipeline.
    """
    from pipelines.outputs import build_outputs, write_outputs
    from pipelines.registry import get_protocol, run_protocol

    try:
        datasets, problems = read_series_files(spec.files)
        params = dict(spec.params)
        model, stats, seconds_before = None, None, 0.0
        if spec.model:
            model, stats = _load_model(spec.protocol, spec.model, spec.device)
            seconds_before = stats.seconds if stats is not None else 0.0
        result = run_protocol(spec.protocol, datasets, params, model=model)
        result.warnings[:0] = problems
        if model is not None and stats is not None:
            from models.inference import phantom_only_warning

            result.summary["model"] = f"{model.algorithm.name} {model.algorithm.version}"
            result.summary["inference_device"] = model.device
            result.summary["inference_seconds"] = round(stats.seconds - seconds_before, 3)
            result.summary["model_load_seconds"] = round(stats.load_seconds, 3)
            warning = phantom_only_warning(result.algorithm)
            if warning and warning not in result.warnings:
                result.warnings.append(warning)
        objects = build_outputs(
            result,
            software_version=spec.software_version,
            procedure_code=get_protocol(spec.protocol).procedure_code,
            uid_scope=spec.output_scope,
        )
        paths = write_outputs(objects, Path(spec.out_dir))
        outputs = []
        for kind, path in sorted(paths.items()):
            ds = getattr(objects, kind.lower())
            outputs.append(
                OutputFile(
                    kind=kind.upper(),
                    sop_class_uid=str(ds.SOPClassUID),
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    series_instance_uid=str(ds.SeriesInstanceUID),
                    path=str(path),
                )
            )
        if spec.validate_outputs:
            validate_files([o.path for o in outputs])
        algorithm = f"{result.algorithm.name} {result.algorithm.version}"
        return JobOutcome(
            ok=True,
            algorithm=algorithm,
            summary=result.summary,
            warnings=[*result.warnings, *objects.notes],
            outputs=outputs,
        )
    except InvalidInputError as exc:
        return JobOutcome(ok=False, error=str(exc), error_kind="input")
    except AINodeError as exc:
        return JobOutcome(ok=False, error=str(exc), error_kind="pipeline")
    except Exception as exc:  # noqa: BLE001 - a bug must fail the job, not the node
        logger.error("job %d: unexpected error\n%s", spec.job_id, traceback.format_exc())
        return JobOutcome(
            ok=False,
            error=f"internal error: {type(exc).__name__}: {exc} (see the node log)",
            error_kind="internal",
        )


def _load_model(protocol: str, options: dict[str, Any], device: str) -> tuple[Any, Any]:
    """Load the configured model in this process (cached between jobs of the same process).

    Returns ``(None, None)`` when ``best-validated`` finds no research/validated model (the
    reference method runs).

    Raises
    ------
    ModelError
        Unknown, tampered or mismatched model, or CUDA requested but absent.
    """
    from models.inference import InferenceOptions, load_configured_model

    loaded = load_configured_model(
        protocol,
        str(options["selection"]),
        install_dir=options.get("install_dir"),
        device=str(options.get("device") or device),
        options=InferenceOptions(
            overlap=float(options.get("overlap", 0.25)),
            sw_batch_size=int(options.get("sw_batch_size", 4)),
            amp=bool(options.get("amp", True)),
        ),
    )
    if loaded is None:
        return None, None
    return loaded


def validate_files(paths: Sequence[str]) -> None:
    """Check files with dciodvfy when it is installed.

    Raises
    ------
    OutputError
        If dciodvfy reports errors for any file (the messages are included).
    """
    from pipelines.validation import dciodvfy_available, run_dciodvfy

    if not dciodvfy_available():
        logger.debug("dciodvfy not installed; outputs not validated")
        return
    failures = []
    for path in paths:
        report = run_dciodvfy(path)
        if report.errors:
            failures.append(f"{Path(path).name}: {'; '.join(report.errors[:5])}")
    if failures:
        raise OutputError(
            "output objects failed DICOM validation (dciodvfy): " + " | ".join(failures)
        )


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the node process dies (e.g. ``kill -9`` of the node).

    Otherwise an orphaned worker would run on while the restarted node runs the same job again.
    Elsewhere this is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() == 1:  # the parent already died before prctl took effect
            os._exit(1)
    except OSError:
        logger.debug("prctl(PR_SET_PDEATHSIG) unavailable")


def child_main(spec_path: str, outcome_path: str) -> None:
    """Entry point of a worker child process: run the job in ``spec_path``, write the outcome.

    The outcome is written atomically, so the parent either reads a complete outcome or knows
    the child died.
    """
    _die_with_parent()
    spec = JobSpec(**json.loads(Path(spec_path).read_text()))
    logging.basicConfig(
        level=spec.log_level,
        format="%(asctime)s worker %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # highdicom logs every module it copies at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    outcome = execute_job(spec)
    tmp = Path(outcome_path + ".tmp")
    tmp.write_text(outcome.to_json())
    os.replace(tmp, outcome_path)
