"""Chan's combination of per-block statistics (kernels/instance_norm.py, kernels/batch_norm.py): the
statistics kernels write, per (row, block of BLOCK elements), the block's mean and its sum of squared
deviations from it; torch combines them in order (deterministic, no atomics)."""
import torch


def combine_block_statistics(mean_partials: torch.Tensor, m2_partials: torch.Tensor, count: int, block: int,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, rstd = 1 / sqrt(σ² + eps)) of each row of `count` elements from its blocks' partials
    [..., blocks]: the blocks' counts are all `block` but the last (counted in int64: exact)."""
    n_blocks = mean_partials.shape[-1]
    counts = (count - block * torch.arange(n_blocks, device=mean_partials.device)).clamp_(max=block).to(mean_partials.dtype)
    mean = (mean_partials * counts).sum(-1) / count
    m2 = m2_partials.sum(-1) + (counts * (mean_partials - mean.unsqueeze(-1)).square()).sum(-1)
    return mean, (m2 / count + eps).rsqrt()
