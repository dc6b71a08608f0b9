"""Channel ("transposed") attention module, Restormer-style, on the fused `ops.channel_attention`."""
import torch
from torch import nn

from .. import ops

__all__ = ["ChannelAttention"]


class ChannelAttention(nn.Module):
    """Multi-head channel attention of queries from x and keys/values from `context` (x itself when
    None: self-attention).

    Q = dwconv3×3(conv1×1(x)); K, V = chunk(dwconv3×3(conv1×1(context, 2C))); per head, Q and K are
    L2-normalised over pixels, A = softmax(Q Kᵀ · temperature) (a (C/heads)² matrix, temperature
    learnable per head, init 1), out = conv1×1(A V). Convolutions without bias (FSMNet's setting).
    The 1×1 projections run as `ops.conv1x1` (matrix products on the NCHW planes). The depthwise
    convolutions and the attention run as one op, `ops.depthwise_channel_attention`
    (fused stencils: PyTorch's depthwise convolution is oneDNN's, slow on NCHW maps on the CPU), which
    recomputes the depthwise outputs in backward instead of keeping three more maps per call.
    x, context [B, C, H, W] → [B, C, H, W].
    """

    def __init__(self, channels: int, heads: int = 8, bias: bool = False):
        super().__init__()
        if channels % heads:
            raise ValueError(f"heads ({heads}) must divide channels ({channels})")
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads))
        self.query = nn.Conv2d(channels, channels, 1, bias=bias)
        self.query_dw = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=bias)
        self.key_value = nn.Conv2d(channels, 2 * channels, 1, bias=bias)
        self.key_value_dw = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1, groups=2 * channels, bias=bias)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = ops.conv1x1(x, self.query.weight, self.query.bias)
        kv = ops.conv1x1(context, self.key_value.weight, self.key_value.bias)
        out = ops.depthwise_channel_attention(
            q, kv, self.query_dw.weight, self.key_value_dw.weight, self.temperature,
            self.heads, q_bias=self.query_dw.bias, kv_bias=self.key_value_dw.bias,
        )
        return ops.conv1x1(out, self.project_out.weight, self.project_out.bias)
