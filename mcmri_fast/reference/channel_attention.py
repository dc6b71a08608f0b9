"""Reference of channel ("transposed") attention, Restormer-style: the affinity is a channel×channel
matrix per head, summed over all pixels (FSMNet's FS-fusion attention; IMA's CSCA)."""
import torch
import torch.nn.functional as F

from .depthwise_conv import depthwise_conv3x3

# F.normalize's floor on the norm
NORM_EPS = 1e-12


def channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    heads: int,
    normalize: bool = True,
) -> torch.Tensor:
    """Multi-head channel attention.

    q [B, Cq, *spatial], k and v [B, Ck, *spatial] (the same N = prod(spatial) pixels); heads divides
    Cq and Ck; temperature [heads] (or any shape of `heads` elements). Per head h, with
    Q_h [Cq/heads, N], K_h, V_h [Ck/heads, N] the head's channels flattened over pixels:

        Q̂ = Q_h / max(‖Q_h‖_row, eps),  K̂ = K_h / max(‖K_h‖_row, eps)   (if normalize; rows over pixels)
        A = softmax(Q̂ K̂ᵀ · temperature[h], over the last dim)        [Cq/heads, Ck/heads]
        out_h = A V_h                                                    [Cq/heads, N]

    Returns [B, Cq, *spatial]. Self-attention: q, k, v from one source; cross-attention: q from one,
    k and v from another.
    """
    B, Cq = q.shape[:2]
    Ck = k.shape[1]
    spatial = q.shape[2:]
    qh = q.reshape(B, heads, Cq // heads, -1)
    kh = k.reshape(B, heads, Ck // heads, -1)
    vh = v.reshape(B, heads, Ck // heads, -1)
    if normalize:
        qh = F.normalize(qh, dim=-1, eps=NORM_EPS)
        kh = F.normalize(kh, dim=-1, eps=NORM_EPS)
    scores = qh @ kh.transpose(-2, -1)
    # in the scores' dtype: a float32 temperature must not promote half-precision scores past V's dtype
    attn = scores * temperature.reshape(1, heads, 1, 1).to(scores.dtype)
    out = attn.softmax(dim=-1) @ vh
    return out.reshape(B, Cq, *spatial)


def depthwise_channel_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    q_weight: torch.Tensor,
    kv_weight: torch.Tensor,
    temperature: torch.Tensor,
    heads: int,
    q_bias: torch.Tensor | None = None,
    kv_bias: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Restormer's attention on its projections: the queries and the keys/values each through a depthwise
    3×3 convolution, then `channel_attention`:

        K̃, Ṽ = chunk(dw3×3(kv), 2 over channels),  out = channel_attention(dw3×3(q), K̃, Ṽ)

    q [B, Cq, H, W]; kv [B, 2·Ck, H, W] (keys, then values); the weights [C, 1, 3, 3] of their inputs'
    channels, biases [C] or None. Returns [B, Cq, H, W].
    """
    k, v = depthwise_conv3x3(kv, kv_weight, kv_bias).chunk(2, dim=1)
    return channel_attention(depthwise_conv3x3(q, q_weight, q_bias), k, v, temperature, heads, normalize)
