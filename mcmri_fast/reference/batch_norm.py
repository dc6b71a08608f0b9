"""Reference of batch norm + ReLU with an optional residual added before the normalisation: the unit of MANet's
dense blocks, conv3×3 → (+ the dense links) → BatchNorm2d → ReLU."""
import torch
import torch.nn.functional as F


def batch_norm_relu(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """relu(F.batch_norm(x + residual, running_mean, running_var, weight, bias, training, momentum, eps)).

    x [B, C, *spatial]; residual (None: 0) of x's shape; weight, bias, running_mean, running_var [C] or None.
    In training mode the batch statistics normalise (and update the running ones in place, when given); in
    eval mode the running statistics do. Eager PyTorch as the authors' modules run it: the add in place on
    x's fresh tensor is not done here (x may be a leaf), so the add is a tensor of its own.
    """
    t = x if residual is None else x + residual
    return F.relu(F.batch_norm(t, running_mean, running_var, weight, bias, training, momentum, eps))
