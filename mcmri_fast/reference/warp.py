"""Reference of the warp: `F.grid_sample` (bilinear) on the normalised grid built from a displacement
field in pixels (the oracle of every backend of `ops.warp`)."""
import torch
import torch.nn.functional as F


def sampling_grid(flow: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """The grid [B, H, W, 2] of `F.grid_sample` that samples pixel (j + flow[:, 0], i + flow[:, 1]) at
    output pixel (i, j): pixel p of an axis of size N is (2p + 1)/N − 1 (align_corners=False) or
    2p/(N − 1) − 1 (align_corners=True) in its normalised coordinates."""
    _, _, H, W = flow.shape
    rows = torch.arange(H, dtype=flow.dtype, device=flow.device).reshape(H, 1)
    cols = torch.arange(W, dtype=flow.dtype, device=flow.device)
    x, y = cols + flow[:, 0], rows + flow[:, 1]
    if align_corners:
        gx, gy = 2 * x / (W - 1) - 1, 2 * y / (H - 1) - 1
    else:
        gx, gy = (2 * x + 1) / W - 1, (2 * y + 1) / H - 1
    return torch.stack([gx, gy], dim=-1)


def warp(image: torch.Tensor, flow: torch.Tensor, padding: str = "reflection", align_corners: bool = False) -> torch.Tensor:
    """out[b, c, i, j] = image[b, c] sampled bilinearly at (x, y) = (j + flow[b, 0, i, j], i + flow[b, 1, i, j]).

    image [B, C, H, W] and flow [B, 2, H, W] real, of one dtype; padding "zeros", "border" or
    "reflection" (`F.grid_sample`'s modes). Returns [B, C, H, W].
    """
    grid = sampling_grid(flow, align_corners)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding, align_corners=align_corners)
