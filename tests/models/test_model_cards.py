"""Model cards: the schema accepts the shipped card and refuses broken ones with clear messages."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from models.cards import CARD_FILE, ModelCard, read_card, validate_card_data
from pipelines.errors import ModelError
from pipelines.types import ValidationStatus


@pytest.fixture()
def card_data(shipped_l3_dir: Path) -> dict:
    return json.loads((shipped_l3_dir / CARD_FILE).read_text())


def test_shipped_card_is_valid_and_round_trips(shipped_l3_dir: Path, card_data: dict) -> None:
    card = read_card(shipped_l3_dir)
    assert card.protocol == "l3-body-composition"
    assert card.validation_status is ValidationStatus.PHANTOM_ONLY
    assert {n.role for n in card.networks} == {"tissue", "level"}
    tissue = card.network("tissue")
    assert tissue is not None and tissue.input["intensity_window_hu"] == [-250.0, 250.0]
    level = card.network("level")
    assert level is not None and level.input["intensity_window_hu"] == [100.0, 1500.0]
    # Every tissue label carries its SNOMED CT code.
    assert all(lab["code"]["scheme"] == "SCT" for lab in tissue.labels if lab["value"] > 0)
    assert card.to_dict() == card_data
    assert ModelCard.from_dict(card.to_dict()) == card


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("validation_status"), "'validation_status' is a required property"),
        (lambda d: d.update(validation_status="clinically-proven"), "validation_status"),
        (lambda d: d["networks"][0].update(weights="../../etc/x.safetensors"), "networks/0/weights"),
        (lambda d: d["networks"][0].update(weights="tissue.pt"), "networks/0/weights"),
        (lambda d: d["networks"][0]["architecture"].update(name="os.system"), "architecture/name"),
        (lambda d: d["networks"][0]["architecture"]["args"].update(act={"name": "x"}),
         "architecture/args/act"),
        (lambda d: d["networks"][0].update(sha256="abc"), "networks/0/sha256"),
        (lambda d: d.update(unexpected="x"), "Additional properties are not allowed"),
        (lambda d: d["networks"].append(copy.deepcopy(d["networks"][0])), "roles must be unique"),
    ],
)
def test_bad_card_is_refused_with_the_field_named(card_data: dict, mutate, expected: str) -> None:
    mutate(card_data)
    with pytest.raises(ModelError, match="fails the model-card schema") as info:
        validate_card_data(card_data, "test card")
    assert expected in str(info.value)


def test_card_that_is_not_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / CARD_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_card(tmp_path)
    with pytest.raises(ModelError, match="has no card.json"):
        read_card(tmp_path / "missing")
