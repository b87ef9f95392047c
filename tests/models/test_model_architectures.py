"""Every protocol network builds from MONAI and learns: a few iterations on a tiny input lower
the loss (Dice + cross-entropy for segmentation, cross-entropy for the RDS classifier)."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from models.architectures import DEFAULT_NETWORKS, build_network, rds_lung_network
from pipelines.errors import ModelError

_CASES = [
    (protocol, role)
    for protocol, roles in DEFAULT_NETWORKS.items()
    for role in roles
]

# Tiny inputs: (batch, channels, *spatial). FlexibleUNet/EfficientNet need sizes divisible by 32.
_SIZES = {2: (32, 32), 3: (16, 16, 16)}


def _tiny(architecture: str, args: dict) -> dict:
    """Smaller variants for the CPU test (same class; the RDS segmenter keeps its B5 encoder)."""
    args = dict(args)
    if architecture == "BasicUNet":
        args["features"] = [4, 4, 8, 8, 16, 4]
    elif architecture == "AttentionUnet":
        args["channels"] = [4, 8, 16, 32]
    elif architecture == "DynUNet":
        args["filters"] = [4, 8, 8, 16]
    elif architecture == "FlexibleUNet":
        # Same class and decoder; the EfficientNet-B0 encoder instead of B5 keeps the CPU test
        # short (B5 is built and run once in test_rds_b5_segmenter_builds_and_runs).
        args["backbone"] = "efficientnet-b0"
        args["decoder_channels"] = [16, 8, 8, 8, 4]
    return args


@pytest.mark.parametrize(("protocol", "role"), _CASES)
def test_network_trains_loss_falls(protocol: str, role: str) -> None:
    torch.manual_seed(0)
    architecture, args = DEFAULT_NETWORKS[protocol][role]
    network = build_network(architecture, _tiny(architecture, args))
    dims = int(args["spatial_dims"])
    size = (64, 64) if architecture in ("FlexibleUNet", "EfficientNetBN") else _SIZES[dims]
    generator = torch.Generator().manual_seed(1)
    x = torch.rand((2, int(args["in_channels"]), *size), generator=generator)
    if architecture == "EfficientNetBN":
        x = torch.rand((4, int(args["in_channels"]), *size), generator=generator)
        y = torch.tensor([0, 1, 0, 1])
        x[y == 1] += 1.0  # class 1 is brighter: learnable
        loss_fn = torch.nn.CrossEntropyLoss()
    else:
        # Label = a bright square per class, so the task is learnable from the input.
        n = int(args["out_channels"])
        y = torch.zeros((2, 1, *size), dtype=torch.long)
        for c in range(1, n):
            sl = tuple(slice(2 + 3 * (c - 1), 5 + 3 * (c - 1)) for _ in size)
            y[(slice(None), 0, *sl)] = c
            x[(slice(None), 0, *sl)] += c
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    network.train()
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = loss_fn(network(x), y)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    # The loss falls: the last value at least 5 % below the first, and the second half of the
    # run lower on average than the first half.
    assert losses[-1] < 0.95 * losses[0], f"{protocol}/{role}: losses {losses}"
    assert sum(losses[4:]) < sum(losses[:4]), f"{protocol}/{role}: losses {losses}"


def test_rds_b5_segmenter_builds_and_runs() -> None:
    architecture, args = rds_lung_network("efficientnet-b5")
    network = build_network(architecture, args).eval()
    with torch.inference_mode():
        out = network(torch.rand(1, 1, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def test_unknown_architecture_and_pretrained_weights_are_refused() -> None:
    with pytest.raises(ModelError, match="is not one ainode builds"):
        build_network("torch.nn.Module", {})
    architecture, args = rds_lung_network()
    with pytest.raises(ModelError, match="never downloads weights"):
        build_network(architecture, {**args, "pretrained": True})
    with pytest.raises(ModelError, match="cannot build BasicUNet"):
        build_network("BasicUNet", {"spatial_dims": 2, "no_such_argument": 1})
