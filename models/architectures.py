"""The networks of the four protocols, built from MONAI classes only.

A model card names one of :data:`ARCHITECTURES` and its keyword arguments; :func:`build_network`
builds it. Nothing else can be built from a card (no import paths, no code). The ``*_network``
functions give each protocol's default architecture and arguments, as used by the trainers and
the shipped models; the arguments are small so that phantom-trained weights stay a few MB.

Sources of the architectures (see ``shared/reference/clinical.md``):

* L3 body composition: a 2D U-Net on the mid-L3 slice with the input window -250..250 HU, and a
  2D network on frontal and sagittal maximum-intensity projections (100..1500 HU, 1x1 mm pixels)
  that segments the L3 vertebra, from which the L3 position is taken (the section-detection
  study; Kanavati et al. 2020 segment the L3 region on the frontal MIP with a U-Net).
* Chest respiratory muscles: Attention U-Net (Oktay et al. 2018). The source study (Choi et al.,
  PLoS One 2024) cascades thoracic muscle -> respiratory muscle -> three-class classification;
  ainode's default is ONE multi-class Attention U-Net in the numbering of
  ``pipelines.chest_respiratory_muscle.LABELS`` (background + pectoralis, erector spinae,
  intercostal, diaphragm, each right/left, + other muscle = 10 classes), because the last stage's
  classes already contain the first two stages' masks as their union, and one network is one
  pass and one weights file. The cascade can be expressed as three networks with roles
  ``"thoracic"``, ``"respiratory"``, ``"classes"`` in one card.
* Neonatal RDS: U-Net with an EfficientNet-B5 encoder for the lung fields (``FlexibleUNet``) and
  EfficientNet B0/B3/B5 classifiers (``EfficientNetBN``) on the lung region; ``pretrained`` is
  always False (no downloads; ImageNet weights are not used).
* Brain GWR: a 3D full-resolution U-Net in the nnU-Net style (``DynUNet``, Isensee et al. 2021)
  for the four landmarks left and right (labels 1..7 of ``pipelines.brain_gwr``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.networks import nets

from ainode_core.errors import ModelError
from pipelines.registry import SpecObjects

#: The MONAI classes a model card may name.
ARCHITECTURES: dict[str, type[torch.nn.Module]] = {
    "BasicUNet": nets.BasicUNet,
    "UNet": nets.UNet,
    "AttentionUnet": nets.AttentionUnet,
    "FlexibleUNet": nets.FlexibleUNet,
    "EfficientNetBN": nets.EfficientNetBN,
    "DynUNet": nets.DynUNet,
}

_NO_DOWNLOAD = {"FlexibleUNet", "EfficientNetBN"}


def _tuples(value: Any) -> Any:
    """JSON lists -> tuples (MONAI accepts both; tuples keep the args hashable and comparable)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def build_network(architecture: str, args: dict[str, Any]) -> torch.nn.Module:
    """Build a MONAI network named in a model card.

    Parameters
    ----------
    architecture:
        A key of :data:`ARCHITECTURES`.
    args:
        Keyword arguments of the class (JSON values: lists become tuples). For ``FlexibleUNet``
        and ``EfficientNetBN``, ``pretrained`` is forced to ``False``.

    Returns
    -------
    torch.nn.Module
        The network, on the CPU, in training mode, randomly initialised.

    Raises
    ------
    ModelError
        If the architecture is not allowed or the arguments do not fit it.
    """
    cls = ARCHITECTURES.get(architecture)
    if cls is None:
        raise ModelError(
            f"architecture {architecture!r} is not one ainode builds; allowed: "
            f"{', '.join(ARCHITECTURES)}"
        )
    kwargs = {k: _tuples(v) for k, v in args.items()}
    if architecture in _NO_DOWNLOAD:
        if kwargs.get("pretrained"):
            raise ModelError(
                f"{architecture}: pretrained=True would download ImageNet weights; ainode never "
                "downloads weights, set pretrained to false"
            )
        kwargs["pretrained"] = False
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ModelError(f"cannot build {architecture} with arguments {args}: {exc}") from exc


# -- default architectures of the protocols ------------------------------------------------------


def l3_tissue_network() -> tuple[str, dict[str, Any]]:
    """2D U-Net for SMA/SAT/VAT/IMAT on the L3 slice: 1 channel in, 5 classes out.

    Input: the slice windowed to -250..250 HU scaled to 0..1. Output labels: 0 background,
    1 SMA, 2 SAT, 3 VAT, 4 IMAT (``pipelines.l3_body_composition`` numbering).
    """
    return "BasicUNet", {
        "spatial_dims": 2, "in_channels": 1, "out_channels": 5,
        "features": [16, 16, 32, 64, 128, 16], "dropout": 0.0,
    }


def l3_level_network() -> tuple[str, dict[str, Any]]:
    """2D U-Net on the frontal and sagittal MIPs (2 channels, 100..1500 HU) -> L3 vertebra mask.

    The two MIPs share the cranio-caudal axis (image rows); both are padded to a common width.
    Output: 0 background, 1 L3 vertebra (projected).
    """
    return "BasicUNet", {
        "spatial_dims": 2, "in_channels": 2, "out_channels": 2,
        "features": [8, 16, 32, 64, 128, 8], "dropout": 0.0,
    }


def chest_muscle_network(n_classes: int = 10) -> tuple[str, dict[str, Any]]:
    """Attention U-Net for the respiratory muscles on axial chest CT slices.

    ``n_classes`` includes the background (default 10: labels 0..9 of
    ``pipelines.chest_respiratory_muscle.LABELS``; output channel = label value).
    """
    return "AttentionUnet", {
        "spatial_dims": 2, "in_channels": 1, "out_channels": n_classes,
        "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "dropout": 0.0,
    }


def rds_lung_network(backbone: str = "efficientnet-b5") -> tuple[str, dict[str, Any]]:
    """FlexibleUNet with an EfficientNet encoder for the lung fields (``pipelines.neonatal_rds``:
    0 background, 1 right lung, 2 left lung).

    EfficientNet-B5 as in the study; its weights are about 120 MB in float32, so a shipped
    phantom model may use a smaller backbone (``efficientnet-b0``) and say so in its card.
    """
    return "FlexibleUNet", {
        "spatial_dims": 2, "in_channels": 1, "out_channels": 3, "backbone": backbone,
        "pretrained": False, "decoder_channels": [128, 64, 32, 16, 8],
    }


def rds_classifier_network(model_name: str = "efficientnet-b0",
                           n_classes: int = 2) -> tuple[str, dict[str, Any]]:
    """EfficientNet (B0/B3/B5) classifier on the lung region: 2 classes (no RDS, RDS); the
    softmax of class 1 is ``model.classify``'s RDS probability (``pipelines.neonatal_rds``)."""
    if model_name not in ("efficientnet-b0", "efficientnet-b3", "efficientnet-b5"):
        raise ModelError(f"RDS classifier {model_name!r}: the study used efficientnet-b0/b3/b5")
    return "EfficientNetBN", {
        "model_name": model_name, "spatial_dims": 2, "in_channels": 1,
        "num_classes": n_classes, "pretrained": False,
    }


def brain_landmark_network(n_classes: int = 8) -> tuple[str, dict[str, Any]]:
    """nnU-Net-style 3D full-resolution DynUNet for the GWR landmarks.

    Default 8 classes: background + labels 1..7 of ``pipelines.brain_gwr`` (the four landmarks,
    left and right where paired; output channel = label value).
    """
    kernels = [[3, 3, 3]] * 4
    strides = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    return "DynUNet", {
        "spatial_dims": 3, "in_channels": 1, "out_channels": n_classes,
        "kernel_size": kernels, "strides": strides, "upsample_kernel_size": strides[1:],
        "filters": [8, 16, 32, 64], "norm_name": "instance", "res_block": True,
        "deep_supervision": False,
    }


def l3_networks() -> dict[str, tuple[str, dict[str, Any]]]:
    """Networks of ``l3-body-composition`` by role (its spec's ``networks``)."""
    return {"tissue": l3_tissue_network(), "level": l3_level_network()}


def chest_networks() -> dict[str, tuple[str, dict[str, Any]]]:
    """Networks of ``chest-respiratory-muscle`` by role (its spec's ``networks``)."""
    return {"muscle": chest_muscle_network()}


def rds_networks() -> dict[str, tuple[str, dict[str, Any]]]:
    """Networks of ``neonatal-rds`` by role (its spec's ``networks``)."""
    return {"lung": rds_lung_network(), "classifier": rds_classifier_network()}


def brain_networks() -> dict[str, tuple[str, dict[str, Any]]]:
    """Networks of ``brain-gwr`` by role (its spec's ``networks``)."""
    return {"landmarks": brain_landmark_network()}


#: Default networks per protocol and role, read from each protocol's spec (``networks``:
#: ``"module:function"`` returning ``{role: (architecture, args)}`` for :func:`build_network`):
#: a read-only mapping over the registered protocols that declare networks.
DEFAULT_NETWORKS: Mapping[str, dict[str, tuple[str, dict[str, Any]]]] = SpecObjects(
    "networks", call=True
)


def save_weights(network: torch.nn.Module, path: str | Path) -> None:
    """Write a network's weights as safetensors (``safetensors.torch.save_model``: tensors shared
    between modules, as in ``DynUNet``, are stored once)."""
    from safetensors.torch import save_model

    save_model(network, str(path))


def load_weights(network: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``network`` (strict: every tensor must match).

    Raises
    ------
    ModelError
        If names or shapes do not match the architecture.
    """
    from safetensors.torch import load_model

    try:
        load_model(network, str(path), strict=True, device="cpu")
    except RuntimeError as exc:
        raise ModelError(
            f"weights {Path(path).name} do not fit {type(network).__name__}: {str(exc)[:300]}"
        ) from exc


def count_parameters(network: torch.nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in network.parameters() if p.requires_grad)
