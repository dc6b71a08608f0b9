"""Reference of instance norm + LeakyReLU, the normalisation and activation of fastMRI's U-Net block (DUN-SA's
SA-Net, Z-Net and S-Net; the baselines' U-Nets)."""
import torch
import torch.nn.functional as F


def instance_norm_leaky_relu(x: torch.Tensor, negative_slope: float = 0.2, eps: float = 1e-5) -> torch.Tensor:
    """leaky_relu((x − μ) / sqrt(σ² + eps), negative_slope), μ and σ² (biased) per sample and channel over the
    spatial dims: `nn.InstanceNorm2d(C)` (no affine, no running statistics) then `nn.LeakyReLU(negative_slope)`.

    x [B, C, *spatial]. Returns x's shape: `F.instance_norm` then `F.leaky_relu` in place on the norm's fresh
    output, as `nn.LeakyReLU(inplace=True)` after the norm (fastMRI's block): eager PyTorch at its leanest.
    """
    return F.leaky_relu(F.instance_norm(x, eps=eps), negative_slope, inplace=True)
