"""The protocols ainode knows, and how each turns the datasets of one series into a result.

A protocol entry takes the datasets of one series (with pixel data) and a parameter mapping from
the node's settings, builds the input its pipeline needs (e.g. a CT volume) and calls the pipeline.
Protocols whose pipeline is not part of this version are listed, so routing can name them, but
raise :class:`UnsupportedInputError` with a message that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from pipelines.errors import InvalidInputError, UnsupportedInputError
from pipelines.types import CodedTerm, LearnedModel, PipelineResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProtocolSpec:
    """One analysis protocol.

    Attributes
    ----------
    name:
        Protocol name used in routing rules and the job database.
    title:
        Human-readable title.
    modalities:
        Modalities the protocol accepts.
    procedure_code:
        Procedure Reported in the SR (TID 1500 row 4).
    implemented:
        Whether this version has a pipeline for it.
    """

    name: str
    title: str
    modalities: tuple[str, ...]
    procedure_code: CodedTerm
    implemented: bool
    runner: Callable[..., PipelineResult] | None = None


def _run_l3(
    datasets: Sequence[Dataset], params: Mapping[str, Any], model: LearnedModel | None = None
) -> PipelineResult:
    from pipelines.l3_body_composition import L3Parameters, run_l3_body_composition
    from pipelines.volume import load_ct_volume

    volume = load_ct_volume(datasets)
    parameters = L3Parameters.from_mapping(params)
    result = run_l3_body_composition(volume, parameters, model=model)
    result.warnings[:0] = [w for w in volume.warnings if w not in result.warnings]
    return result


def _run_chest(
    datasets: Sequence[Dataset], params: Mapping[str, Any], model: LearnedModel | None = None
) -> PipelineResult:
    from pipelines.chest_respiratory_muscle import run_from_datasets

    return run_from_datasets(datasets, params, model=model)


def _run_rds(
    datasets: Sequence[Dataset], params: Mapping[str, Any], model: LearnedModel | None = None
) -> PipelineResult:
    from pipelines.neonatal_rds import run_from_datasets

    return run_from_datasets(datasets, params, model=model)


def _run_brain(
    datasets: Sequence[Dataset], params: Mapping[str, Any], model: LearnedModel | None = None
) -> PipelineResult:
    from pipelines.brain_gwr import run_from_datasets

    return run_from_datasets(datasets, params, model=model)


PROTOCOLS: dict[str, ProtocolSpec] = {
    spec.name: spec
    for spec in (
        ProtocolSpec(
            name="l3-body-composition",
            title="L3 body composition (abdominal CT)",
            modalities=("CT",),
            # Procedure Reported (TID 1500): only codes found in pydicom 3.0.2's PS3.16 tables are
            # used; no region-specific CT-of-abdomen code is there, so the generic one.
            procedure_code=CodedTerm("77477000", "SCT", "Computed tomography"),
            implemented=True,
            runner=_run_l3,
        ),
        ProtocolSpec(
            name="chest-respiratory-muscle",
            title="Chest CT respiratory muscles",
            modalities=("CT",),
            procedure_code=CodedTerm("77477000", "SCT", "Computed tomography"),
            implemented=True,
            runner=_run_chest,
        ),
        ProtocolSpec(
            name="neonatal-rds",
            title="Neonatal RDS on chest radiograph",
            modalities=("CR", "DX"),
            # In pydicom 3.0.2's PS3.16 tables (CID 10005); no chest-specific radiography code is.
            procedure_code=CodedTerm("168537006", "SCT", "Plain radiography"),
            implemented=True,
            runner=_run_rds,
        ),
        ProtocolSpec(
            name="brain-gwr",
            title="Post-cardiac-arrest brain CT gray-to-white-matter ratio",
            modalities=("CT",),
            procedure_code=CodedTerm("303653007", "SCT", "Computed tomography of head"),
            implemented=True,
            runner=_run_brain,
        ),
    )
}


def check_parameters(name: str, params: Mapping[str, Any]) -> None:
    """Check that ``params`` are valid parameters of protocol ``name`` (without running it).

    Raises
    ------
    UnsupportedInputError
        Unknown protocol.
    ConfigError
        Unknown parameter names or invalid values (the message lists the known names).
    """
    from pipelines.errors import ConfigError, PipelineError

    get_protocol(name)
    if name == "l3-body-composition":
        from pipelines.l3_body_composition import L3Parameters

        try:
            L3Parameters.from_mapping(params)
        except PipelineError as exc:
            raise ConfigError(f"invalid l3-body-composition parameters: {exc}") from exc
    elif name == "brain-gwr":
        from pipelines.brain_gwr import BrainGWRParameters

        BrainGWRParameters.from_mapping(params)
    elif name == "chest-respiratory-muscle":
        from pipelines.chest_respiratory_muscle import ChestParameters

        ChestParameters.from_mapping(params)
    elif name == "neonatal-rds":
        from pipelines.neonatal_rds import NeonatalRDSParameters

        NeonatalRDSParameters.from_mapping(params)


def get_protocol(name: str) -> ProtocolSpec:
    """The protocol called ``name``.

    Raises
    ------
    UnsupportedInputError
        If no protocol has that name (the message lists the known ones).
    """
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UnsupportedInputError(
            f"unknown protocol {name!r}; known protocols: {', '.join(sorted(PROTOCOLS))}"
        ) from None


def run_protocol(
    name: str,
    datasets: Sequence[Dataset],
    params: Mapping[str, Any] | None = None,
    model: LearnedModel | None = None,
) -> PipelineResult:
    """Run protocol ``name`` on the datasets of one series.

    Parameters
    ----------
    name:
        Protocol name.
    datasets:
        The series' datasets with pixel data, any order.
    params:
        Protocol parameters from the settings (e.g. ``{"cutoff_set": "martin-2013"}``).
    model:
        A trained network for this protocol (loaded by :mod:`models`), or ``None`` for the
        protocol's reference method.

    Returns
    -------
    PipelineResult

    Raises
    ------
    UnsupportedInputError
        Unknown or not-yet-implemented protocol, or input outside what it measures.
    InvalidInputError
        Input that cannot be read.
    PipelineError
        The pipeline failed on accepted input.
    """
    spec = get_protocol(name)
    if not spec.implemented or spec.runner is None:
        raise UnsupportedInputError(
            f"protocol {name!r} ({spec.title}) is not available in this version of ainode; "
            "change the routing rules to ignore these series until it is"
        )
    modalities = {str(ds.get("Modality", "")) for ds in datasets}
    if not modalities <= set(spec.modalities):
        raise InvalidInputError(
            f"protocol {name!r} measures {'/'.join(spec.modalities)} images, but the series has "
            f"Modality {', '.join(sorted(modalities)) or '(missing)'}; check the routing rules"
        )
    return spec.runner(datasets, params or {}, model=model)
