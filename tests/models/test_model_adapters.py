"""The chest, neonatal RDS and brain GWR inference adapters: a model directory with random-weight
networks (no trained model ships for them yet) loads through the registry and its ``predict`` /
``classify`` follow the signatures the pipelines document (shape, dtype, label range)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.architectures import (
    DEFAULT_NETWORKS,
    build_network,
    rds_classifier_network,
    save_weights,
)
from models.cards import ModelCard, NetworkSpec
from models.inference import load_learned_model
from models.registry import load_entry, sha256_file
from pipelines.types import ValidationStatus


def _write_model(directory: Path, protocol: str,
                 networks: list[tuple[str, str, dict[str, Any], dict[str, Any]]]) -> Path:
    directory.mkdir()
    specs = []
    torch.manual_seed(0)
    for role, architecture, args, input_spec in networks:
        weights = directory / f"{role}.safetensors"
        save_weights(build_network(architecture, args), weights)
        n = int(args.get("out_channels", args.get("num_classes", 2)))
        specs.append(NetworkSpec(role, weights.name, sha256_file(weights), architecture, args,
                                 input_spec, [{"value": i, "name": f"class {i}"} for i in range(n)]))
    ModelCard(
        name=f"{protocol}-random", version="0.0.1", protocol=protocol, task="adapter test",
        validation_status=ValidationStatus.PHANTOM_ONLY, intended_use="tests only",
        training_data={"description": "none (random weights)"},
        evaluation={"set": "none", "metrics": {}}, networks=specs,
    ).write(directory)
    return directory


def test_chest_adapter_labels_every_slice(tmp_path: Path) -> None:
    architecture, args = DEFAULT_NETWORKS["chest-respiratory-muscle"]["muscle"]
    args = {**args, "channels": [4, 8, 16, 32]}
    model_dir = _write_model(tmp_path / "chest", "chest-respiratory-muscle", [(
        "muscle", architecture, args,
        {"spatial_dims": 2, "pixel_spacing_mm": [2.0, 2.0], "roi_size": [64, 64],
         "intensity_window_hu": [-160, 240]})])
    model, stats = load_learned_model(load_entry(model_dir), "cpu")
    hu = np.random.default_rng(0).normal(0, 100, (3, 70, 90)).astype(np.float32)
    labels = model.predict(hu, (5.0, 1.5, 1.5))
    assert labels.shape == hu.shape and labels.dtype == np.uint8 and labels.max() <= 9
    assert model.classify is None and stats.calls == 1 and stats.seconds > 0


def test_brain_adapter_resamples_and_returns_the_input_grid(tmp_path: Path) -> None:
    architecture, args = DEFAULT_NETWORKS["brain-gwr"]["landmarks"]
    args = {**args, "filters": [4, 4, 8, 8]}
    model_dir = _write_model(tmp_path / "brain", "brain-gwr", [(
        "landmarks", architecture, args,
        {"spatial_dims": 3, "pixel_spacing_mm": [3.0, 3.0, 3.0], "roi_size": [16, 16, 16],
         "intensity_window_hu": [0, 80]})])
    model, _ = load_learned_model(load_entry(model_dir), "cpu")
    hu = np.random.default_rng(1).normal(30, 20, (10, 40, 36)).astype(np.float32)
    labels = model.predict(hu, (5.0, 1.0, 1.0))
    assert labels.shape == hu.shape and labels.dtype == np.uint8 and labels.max() <= 7


def test_rds_adapter_segments_and_classifies(tmp_path: Path) -> None:
    architecture, args = DEFAULT_NETWORKS["neonatal-rds"]["lung"]
    args = {**args, "backbone": "efficientnet-b0", "decoder_channels": [16, 8, 8, 8, 4]}
    c_architecture, c_args = rds_classifier_network("efficientnet-b0")
    model_dir = _write_model(tmp_path / "rds", "neonatal-rds", [
        ("lung", architecture, args,
         {"spatial_dims": 2, "roi_size": [64, 64], "intensity_window_hu": [0, 1]}),
        ("classifier", c_architecture, c_args,
         {"spatial_dims": 2, "roi_size": [64, 64], "intensity_window_hu": [0, 1]}),
    ])
    model, _ = load_learned_model(load_entry(model_dir), "cpu")
    image = np.random.default_rng(2).random((90, 80)).astype(np.float32)
    labels = model.predict(image, None)
    assert labels.shape == image.shape and labels.dtype == np.uint8 and labels.max() <= 2
    mask = np.zeros(image.shape, dtype=bool)
    mask[20:60, 10:70] = True
    assert model.classify is not None
    probability = model.classify(image, mask)
    assert isinstance(probability, float) and 0.0 <= probability <= 1.0
    from pipelines.errors import PipelineError

    with pytest.raises(PipelineError, match="lung segmentation is empty"):
        model.classify(image, np.zeros(image.shape, dtype=bool))
