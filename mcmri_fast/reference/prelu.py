"""Reference of PReLU, the activation of FSMNet's heads, tails, residual groups and up-sampling."""
import torch
import torch.nn.functional as F


def prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """out = x where x > 0, else weight[c]·x (weight [1]: one slope shared by all channels).

    x [B, C, *spatial]; weight [1] or [C]. Returns [B, C, *spatial]: `F.prelu` (`nn.PReLU`).
    """
    return F.prelu(x, weight)
