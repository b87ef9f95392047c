"""The model registry: shipped models in ``models/zoo/<name>/`` and installed ones in the data dir.

A model directory holds ``card.json`` (:mod:`models.cards`) and the safetensors weights it names.
The registry

* discovers model directories (shipped first, then ``<data_dir>/models/<name>/``; an installed
  model cannot take a shipped model's name);
* checks every weights file against the sha256 in the card before it is used, and refuses a
  tampered or missing file, or a card that fails the schema, with a :class:`ModelError`;
* never imports, executes or reads configuration from a model directory: only ``card.json`` (as
  JSON data) and the weights (as tensors, via safetensors) are read;
* selects the model of a protocol from the configuration: ``"reference"`` (no model),
  a model name, or ``"best-validated"`` (the ``validated`` model, else the ``research`` model,
  with the best primary metric; ``phantom-only`` models are never chosen this way).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from models.cards import CARD_FILE, ModelCard, read_card
from ainode_core.errors import ModelError
from pipelines.types import ValidationStatus

logger = logging.getLogger(__name__)

#: Shipped, phantom-trained models.
ZOO_DIR = Path(__file__).resolve().parent / "zoo"

#: Selections that are not a model name.
REFERENCE = "reference"
BEST_VALIDATED = "best-validated"

#: Extra files an installed model directory may carry (documentation only; never executed).
_DOC_SUFFIXES = (".md", ".txt", ".csv")

_STATUS_RANK = {ValidationStatus.VALIDATED: 2, ValidationStatus.RESEARCH: 1}


@dataclass(frozen=True)
class ModelEntry:
    """One model directory with its validated card.

    Attributes
    ----------
    card: ModelCard
        The validated card.
    path: pathlib.Path
        The model directory.
    origin: str
        ``"shipped"`` (``models/zoo``) or ``"installed"``.
    """

    card: ModelCard
    path: Path
    origin: str

    @property
    def name(self) -> str:
        """Model name (from the card)."""
        return self.card.name

    def weights_path(self, role: str) -> Path:
        """Path of the weights of the network with ``role``.

        Raises
        ------
        ModelError
            If the card has no network with that role.
        """
        spec = self.card.network(role)
        if spec is None:
            raise ModelError(
                f"model {self.name} has no {role!r} network (it has "
                f"{', '.join(n.role for n in self.card.networks)})"
            )
        return self.path / spec.weights


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_install_dir(data_dir: str | Path) -> Path:
    """Where ``ainode models install`` puts models: ``<data_dir>/models``."""
    return Path(data_dir) / "models"


def verify_model(entry: ModelEntry) -> None:
    """Check every weights file of a model against the sha256 in its card.

    Raises
    ------
    ModelError
        If a weights file is missing or its sha256 differs from the card's (tampered or
        corrupted): the model must not be used.
    """
    for spec in entry.card.networks:
        path = entry.path / spec.weights
        if not path.is_file():
            raise ModelError(
                f"model {entry.name}: weights file {path} of network {spec.role!r} is missing; "
                "reinstall the model"
            )
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise ModelError(
                f"model {entry.name}: weights file {path.name} has sha256 {actual}, but the card "
                f"says {spec.sha256}; the file was changed or corrupted and is refused. Reinstall "
                "the model from its original archive"
            )


def load_entry(model_dir: str | Path, origin: str = "installed", verify: bool = True) -> ModelEntry:
    """Read one model directory (card validated; weights verified when ``verify``).

    Raises
    ------
    ModelError
        Missing or invalid card, or weights that fail their sha256.
    """
    path = Path(model_dir)
    entry = ModelEntry(card=read_card(path), path=path, origin=origin)
    if verify:
        verify_model(entry)
    return entry


@dataclass(frozen=True)
class Discovery:
    """Result of :func:`discover`: valid entries and ``(directory, problem)`` for the others."""

    entries: list[ModelEntry]
    problems: list[tuple[Path, str]]


def discover(install_dir: str | Path | None = None, verify: bool = False) -> Discovery:
    """List the shipped and installed model directories.

    Parameters
    ----------
    install_dir:
        Directory of installed models (``<data_dir>/models``), or ``None`` for shipped only.
    verify:
        Also check the weights' sha256 (reads every weights file).

    Returns
    -------
    Discovery
        Valid entries (shipped first, by name) and the directories refused, with the reason.
    """
    entries: list[ModelEntry] = []
    problems: list[tuple[Path, str]] = []
    seen: dict[str, Path] = {}
    roots = [(ZOO_DIR, "shipped")]
    if install_dir is not None:
        roots.append((Path(install_dir), "installed"))
    for root, origin in roots:
        if not root.is_dir():
            continue
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            if not (model_dir / CARD_FILE).exists():
                continue
            try:
                entry = load_entry(model_dir, origin=origin, verify=verify)
            except ModelError as exc:
                problems.append((model_dir, str(exc)))
                continue
            if entry.name in seen:
                problems.append(
                    (model_dir, f"model name {entry.name!r} is already used by {seen[entry.name]}")
                )
                continue
            seen[entry.name] = model_dir
            entries.append(entry)
    return Discovery(entries, problems)


def get_model(name: str, install_dir: str | Path | None = None, verify: bool = True) -> ModelEntry:
    """The model called ``name``, with its weights verified.

    Raises
    ------
    ModelError
        If no valid model has that name (the message lists the known ones and any refused
        directory of that name), or its weights fail verification.
    """
    found = discover(install_dir)
    for entry in found.entries:
        if entry.name == name:
            if verify:
                verify_model(entry)
            return entry
    refused = [f"{path}: {why}" for path, why in found.problems if path.name == name]
    known = ", ".join(e.name for e in found.entries) or "(none)"
    raise ModelError(
        f"no usable model named {name!r}"
        + (f" ({'; '.join(refused)})" if refused else "")
        + f"; known models: {known}. See `ainode models list`"
    )


def select_model(
    protocol: str, selection: str, install_dir: str | Path | None = None
) -> ModelEntry | None:
    """The model the configuration selects for ``protocol``, or ``None`` for the reference method.

    Parameters
    ----------
    protocol:
        Protocol name.
    selection:
        ``"reference"``, ``"best-validated"`` or a model name.
    install_dir:
        Installed models directory.

    Returns
    -------
    ModelEntry | None
        The verified model; ``None`` for ``"reference"``, and for ``"best-validated"`` when no
        ``research`` or ``validated`` model of the protocol is installed (the reference method
        runs; a ``phantom-only`` model is never chosen this way).

    Raises
    ------
    ModelError
        A named model that does not exist, fails verification or belongs to another protocol.
    """
    if selection == REFERENCE:
        return None
    if selection == BEST_VALIDATED:
        candidates = [
            e for e in discover(install_dir).entries
            if e.card.protocol == protocol and e.card.validation_status in _STATUS_RANK
        ]
        if not candidates:
            logger.info("%s: no research/validated model installed; reference method", protocol)
            return None
        best = max(
            candidates,
            key=lambda e: (_STATUS_RANK[e.card.validation_status],
                           e.card.primary_metric if e.card.primary_metric is not None else -1.0),
        )
        verify_model(best)
        return best
    entry = get_model(selection, install_dir)
    if entry.card.protocol != protocol:
        raise ModelError(
            f"model {selection!r} is for protocol {entry.card.protocol!r}, not {protocol!r}; "
            "fix the models setting"
        )
    return entry


def _safe_extract(archive: Path, target: Path) -> None:
    """Extract a .tar(.gz) or .zip of plain files, refusing links and paths leaving ``target``."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                dest = (target / info.filename).resolve()
                if not dest.is_relative_to(target.resolve()):
                    raise ModelError(f"{archive}: member {info.filename!r} leaves the archive")
            zf.extractall(target)
        return
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if not (member.isfile() or member.isdir()):
                    raise ModelError(
                        f"{archive}: member {member.name!r} is not a plain file; refused"
                    )
            tf.extractall(target, filter="data")
        return
    raise ModelError(f"{archive} is neither a directory nor a .tar/.tar.gz/.zip archive")


def _find_model_dir(root: Path) -> Path:
    if (root / CARD_FILE).is_file():
        return root
    cards = list(root.rglob(CARD_FILE))
    if len(cards) != 1:
        raise ModelError(
            f"expected exactly one {CARD_FILE} in the model to install, found {len(cards)}"
        )
    return cards[0].parent


def install_model(source: str | Path, install_dir: str | Path, *, replace: bool = False) -> ModelEntry:
    """Install a model directory or archive into ``install_dir/<name>``.

    Only ``card.json``, the weights files it names and documentation files (``.md``, ``.txt``,
    ``.csv``) are copied; the card is validated and every weights file verified first.

    Parameters
    ----------
    source:
        A model directory, or a .tar/.tar.gz/.zip holding one.
    install_dir:
        Installed models directory (``<data_dir>/models``).
    replace:
        Replace an installed model of the same name.

    Returns
    -------
    ModelEntry
        The installed model.

    Raises
    ------
    ModelError
        Invalid card, tampered weights, a name that is taken (shipped, or installed without
        ``replace``), or an unreadable archive.
    """
    source = Path(source)
    install_dir = Path(install_dir)
    with tempfile.TemporaryDirectory(prefix="ainode-model-") as tmp:
        if source.is_dir():
            model_dir = source
        elif source.is_file():
            _safe_extract(source, Path(tmp))
            model_dir = _find_model_dir(Path(tmp))
        else:
            raise ModelError(f"{source} does not exist")
        entry = load_entry(model_dir, origin="installed", verify=True)
        if (ZOO_DIR / entry.name).exists():
            raise ModelError(
                f"model name {entry.name!r} belongs to a shipped model; rename the model in its "
                "card (and re-train or re-export) before installing"
            )
        target = install_dir / entry.name
        if target.exists():
            if not replace:
                raise ModelError(
                    f"a model named {entry.name!r} is already installed at {target}; use "
                    "--replace to replace it"
                )
            shutil.rmtree(target)
        staging = install_dir / f".{entry.name}.installing"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        wanted = {CARD_FILE} | {n.weights for n in entry.card.networks}
        for item in model_dir.iterdir():
            if item.is_file() and not item.is_symlink() and (
                item.name in wanted or item.suffix in _DOC_SUFFIXES
            ):
                shutil.copy2(item, staging / item.name)
            else:
                logger.info("install %s: %s not copied (not part of a model)", entry.name, item.name)
        staging.rename(target)
    installed = load_entry(target, origin="installed", verify=True)
    logger.info("installed model %s %s at %s", installed.name, installed.card.version, target)
    return installed
