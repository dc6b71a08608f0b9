"""MANet's T1-guided attention: the reference contrast's features f₁ pick which channels and where of the
target's features f₂ are amplified, eight times per Dense U-Net pair. The reference is
`mcmri_fast.reference.guided_attention`:

    ca = sigmoid(W_up · relu(W_down · m)),  m[b, c] = max_p f₁[b, c, p]         (channel attention, [B, C])
    s[b, p] = max_c f₁[b, c, p] · ca[b, c]                                        ([B, N])
    sa = sigmoid(conv_k×k(s, w_sa))                                               (spatial attention, [B, N])
    out = f₂ · (1 + f₁ · ca · sa)

How the fused backends compute it (cpu, triton, cuda; they share this orchestration and the small steps on
[B, C] and [B, N] tensors, and differ in the four passes over [B, C, N] maps):

* Forward: one pass over f₁ for m and its argmax (per row (b, c)); the tiny 1×1 convolutions on [B, C] as
  matrix products; one pass over f₁ for s and its argmax channel (per pixel); the k×k convolution of the
  one-channel s and its sigmoid (ATen: 1/C of a map); one pass over f₁ and f₂ writing out. Eager PyTorch
  writes a = f₁·ca and a·sa as whole maps and reads them back: about twice the traffic, and two maps kept
  for backward.
* Saved for backward: f₁ and f₂ (the inputs, which the convolutions around the attention keep anyway), and
  the small m, ca, s, sa and the two argmaxes: nothing of the size of a map.
* Backward: ONE pass over grad, f₁, f₂ writes grad_f₁'s dense part gA·ca·sa (gA = grad·f₂) and grad_f₂ =
  grad·(1 + f₁·ca·sa), and reduces Σ_c gA·f₁·ca per pixel (the gradient of sa) and Σ_p gA·f₁·sa per channel
  (of ca). Then the small steps: the sigmoid and the k×k convolution's backward (ATen, one channel) give
  grad_s; the channel max sends grad_s to one element per pixel, the global max pool grad_m to one element
  per channel: a scatter of B·N and one of B·C values into grad_f₁, not a pass over it. The max pools'
  gradients go to their first maximum (as F.adaptive_max_pool2d's and torch.max's), deterministically:
  the scatters write distinct elements, and the channel max's term of grad_ca (many pixels per channel)
  is summed by index_put_'s accumulate, sorted and in order on CUDA.

The kernels: `guided_attention_spatial_max`, `guided_attention_channel_max`, `guided_attention_apply` and
`guided_attention_backward_pass`, whose contract is csrc/guided_attention.h (the C++ ops of
csrc/cpu/guided_attention.cpp and csrc/cuda/guided_attention.cu, and their Triton twins in
mcmri_fast.kernels.guided_attention).
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp

__all__ = ["guided_attention"]


def guided_attention(f1: torch.Tensor, f2: torch.Tensor, ca_weights: Sequence[torch.Tensor],
                     sa_weight: torch.Tensor) -> torch.Tensor:
    """MANet's T1-guided attention, out = f₂ · a + f₂ with a = f₁ · CA(f₁), a = a · SA(a) (module docstring).

    Args:
        f1: the reference contrast's features [B, C, H, W] (what the attention is computed from).
        f2: the target's features, f1's shape (what it amplifies).
        ca_weights: (W_down [Cr, C, 1, 1], W_up [C, Cr, 1, 1]) of the channel attention's 1×1 convolutions
            without bias (MANet: Cr = C / 16); [Cr, C] and [C, Cr] are taken too.
        sa_weight: the spatial attention's k×k convolution, [1, 1, k, k] or [k, k], k odd (MANet: 7), no bias.

    f1, f2 of one dtype (float32, float64, float16 or bfloat16: the fused backends compute the last two in
    float32); the weights any floating dtype (computed in f1's accumulation dtype). Any strides.

    Returns:
        [B, C, H, W] in f1's dtype. Gradients flow to f1, f2 and the three weights through fused kernels.
    """
    ca_down, ca_up, sa_weight = _validate(f1, f2, ca_weights, sa_weight)
    backend = _guided_attention.select(f1.device)
    if backend == "reference":
        C, Cr = ca_up.shape
        return reference.guided_attention(f1, f2, ca_down.reshape(Cr, C, 1, 1), ca_up.reshape(C, Cr, 1, 1),
                                          sa_weight.reshape(1, 1, *sa_weight.shape[-2:]))
    accumulate = _accumulate_dtype(f1.dtype)
    weights = [w.to(accumulate) for w in (ca_down, ca_up, sa_weight.reshape(1, 1, *sa_weight.shape[-2:]))]
    out, *_ = _guided_attention(f1.contiguous(), f2.contiguous(), *weights, backend=backend)
    return out


def _validate(f1, f2, ca_weights, sa_weight):
    """(W_down [Cr, C], W_up [C, Cr], w_sa [k, k]) once f1, f2 and the weights are checked."""
    if isinstance(ca_weights, torch.Tensor) or not isinstance(ca_weights, Sequence) or len(ca_weights) != 2:
        raise TypeError("ca_weights must be a pair (W_down, W_up) of tensors")
    promoted_float_dtype({"f1": f1, "f2": f2, "ca_weights[0]": ca_weights[0], "ca_weights[1]": ca_weights[1],
                          "sa_weight": sa_weight}, like="f1")
    if f1.dtype != f2.dtype:
        raise TypeError(f"f2 must have f1's dtype {f1.dtype}, got {f2.dtype}")
    if f1.dim() != 4:
        raise ValueError(f"f1 must be [B, C, H, W], got shape {tuple(f1.shape)}")
    if f2.shape != f1.shape:
        raise ValueError(f"f2 must have f1's shape {tuple(f1.shape)}, got {tuple(f2.shape)}")
    _, C, H, W = f1.shape
    if C == 0 or H * W == 0:
        raise ValueError(f"f1 needs at least one channel and one pixel, got shape {tuple(f1.shape)}")
    down, up = ca_weights
    if down.dim() == 4 and down.shape[2:] == (1, 1):
        down = down.reshape(down.shape[:2])
    if up.dim() == 4 and up.shape[2:] == (1, 1):
        up = up.reshape(up.shape[:2])
    if down.dim() != 2 or down.shape[1] != C or down.shape[0] == 0:
        raise ValueError(f"ca_weights[0] (W_down) must be [Cr, C, 1, 1] or [Cr, C] with C = {C}, got shape "
                         f"{tuple(ca_weights[0].shape)}")
    if up.shape != (C, down.shape[0]):
        raise ValueError(f"ca_weights[1] (W_up) must be [C, Cr, 1, 1] or [C, Cr] = [{C}, {down.shape[0]}], got shape "
                         f"{tuple(ca_weights[1].shape)}")
    k = sa_weight.shape[-1] if sa_weight.dim() >= 2 else 0
    if not (sa_weight.dim() in (2, 4) and sa_weight.shape[:-2] in ((), (1, 1)) and sa_weight.shape[-2] == k
            and k % 2 == 1):
        raise ValueError(f"sa_weight must be [1, 1, k, k] or [k, k] with k odd, got shape {tuple(sa_weight.shape)}")
    return down, up, sa_weight.reshape(k, k)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _channel_attention(m, down, up):
    """(hidden, ca): the channel attention on the pooled [B, C] maxima, hidden = W_down · m before the ReLU."""
    hidden = m @ down.t()
    return hidden, torch.sigmoid(hidden.relu() @ up.t())


# The small steps of the backends: on the CPU C++ ops (ATen's CPU convolution of one channel takes a slow
# path: its backward alone took longer than the rest of the op at 8×64×32²; and its index_put_ is serial),
# on a GPU torch ops (cuDNN, and a B·N-sized scatter).


def _spatial_attention(backend, s, weight):
    """sa = sigmoid(conv_k×k(s, weight)), s [B, H, W], weight [1, 1, k, k]."""
    if backend == "cpu":
        return torch.ops.mcmri_fast.guided_attention_spatial_conv(s, weight.view(weight.shape[-2:]))
    return torch.sigmoid(F.conv2d(s.unsqueeze(1), weight, padding=weight.shape[-1] // 2)).squeeze(1)


def _spatial_attention_backward(backend, grad_sa, sa, s, weight):
    """(grad_s [B, H, W], grad_weight [1, 1, k, k]) from the gradient of sa."""
    if backend == "cpu":
        grad_s, grad_weight = torch.ops.mcmri_fast.guided_attention_spatial_conv_backward(
            grad_sa, sa, s, weight.view(weight.shape[-2:]))
        return grad_s, grad_weight.view(weight.shape)
    z = (grad_sa * sa * (1 - sa)).unsqueeze(1)
    pad = weight.shape[-1] // 2
    grad_s, grad_weight, _ = torch.ops.aten.convolution_backward(
        z, s.unsqueeze(1), weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1, [True, True, False])
    return grad_s.squeeze(1), grad_weight


def _channel_max_backward(backend, grad_f1, f1, ca, index, grad_s):
    """The channel max sends grad_s to a[b, c*(p), p]: adds ca·grad_s to grad_f1 there (in place) and returns
    the term Σ_{p: c*(p) = c} f1·grad_s of grad_ca [B, C]."""
    if backend == "cpu":
        return torch.ops.mcmri_fast.guided_attention_channel_max_backward(grad_f1, f1, ca, index, grad_s)
    B, C = ca.shape
    flat = grad_f1.view(B, C, -1)
    flat.scatter_add_(1, index.unsqueeze(1), (grad_s * ca.gather(1, index)).unsqueeze(1).to(flat.dtype))
    f1_at_max = f1.view(B, C, -1).gather(1, index.unsqueeze(1)).squeeze(1).to(grad_s.dtype)
    batch = torch.arange(B, device=f1.device).unsqueeze(1).expand_as(index)
    return ca.new_zeros((B, C)).index_put_((batch, index), grad_s * f1_at_max, accumulate=True)


_guided_attention = FusedOp(
    "guided_attention",
    kernels=("guided_attention_spatial_max", "guided_attention_channel_max", "guided_attention_apply",
             "guided_attention_backward_pass"),
)


@_guided_attention.forward
def _(k, f1: torch.Tensor, f2: torch.Tensor, ca_down: torch.Tensor, ca_up: torch.Tensor, sa_weight: torch.Tensor
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """f1, f2 [B, C, H, W] contiguous; ca_down [Cr, C], ca_up [C, Cr], sa_weight [1, 1, k, k] in the
    accumulation dtype. Returns (out, then for the backward: m [B, C], its argmax [B, C], ca [B, C], s [B, N],
    its argmax channel [B, N], sa [B, N])."""
    B, _, H, W = f1.shape
    m, m_index = k.guided_attention_spatial_max(f1)
    _, ca = _channel_attention(m, ca_down, ca_up)
    s, s_index = k.guided_attention_channel_max(f1, ca)
    sa = _spatial_attention(k.backend, s.view(B, H, W), sa_weight).view(B, H * W)
    return k.guided_attention_apply(f1, f2, ca, sa), m, m_index, ca, s, s_index, sa


@_guided_attention.fake
def _(f1, f2, ca_down, ca_up, sa_weight):
    B, C, H, W = f1.shape
    per_channel = f1.new_empty((B, C), dtype=ca_down.dtype)
    per_pixel = f1.new_empty((B, H * W), dtype=ca_down.dtype)
    return (torch.empty_like(f2, memory_format=torch.contiguous_format), per_channel,
            per_channel.new_empty((B, C), dtype=torch.long), torch.empty_like(per_channel), per_pixel,
            per_pixel.new_empty((B, H * W), dtype=torch.long), torch.empty_like(per_pixel))


def _setup_context(ctx, inputs, output):
    f1, f2, ca_down, ca_up, sa_weight, backend = inputs
    small = output[1:]
    ctx.mark_non_differentiable(*small)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(f1, f2, ca_down, ca_up, sa_weight, *small)
    ctx.backend = backend


def _autograd(ctx, grad, *_grad_small):
    if grad is None:  # gradients are not materialised: nothing flows back
        return (None,) * 6
    grads = _guided_attention.backward_op(grad, *ctx.saved_tensors, ctx.backend)
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:5])) + (None,)


@_guided_attention.backward(setup_context=_setup_context, autograd=_autograd)
def _(k, grad: torch.Tensor, f1: torch.Tensor, f2: torch.Tensor, ca_down: torch.Tensor, ca_up: torch.Tensor,
      sa_weight: torch.Tensor, m: torch.Tensor, m_index: torch.Tensor, ca: torch.Tensor, s: torch.Tensor,
      s_index: torch.Tensor, sa: torch.Tensor
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad [B, C, H, W] (any strides); the rest as the forward took and returned them.
    Returns (grad_f1, grad_f2, grad_ca_down, grad_ca_up, grad_sa_weight)."""
    B, C, H, W = f1.shape
    N = H * W
    grad_f1, grad_f2, pixel_sums, channel_sums = k.guided_attention_backward_pass(grad, f1, f2, ca, sa)
    grad_s, grad_sa_weight = _spatial_attention_backward(k.backend, pixel_sums.view(B, H, W), sa.view(B, H, W),
                                                         s.view(B, H, W), sa_weight)
    grad_ca = channel_sums + _channel_max_backward(k.backend, grad_f1, f1, ca, s_index, grad_s.view(B, N))
    grad_f1 = grad_f1.view(B, C, N)
    # the channel attention's two 1×1 convolutions and the global max pool
    hidden, _ = _channel_attention(m, ca_down, ca_up)
    grad_u = grad_ca * ca * (1 - ca)
    grad_ca_up = grad_u.t() @ hidden.relu()
    grad_hidden = (grad_u @ ca_up) * (hidden > 0)
    grad_ca_down = grad_hidden.t() @ m
    grad_m = grad_hidden @ ca_down
    grad_f1.view(B * C, N).scatter_add_(1, m_index.view(B * C, 1), grad_m.view(B * C, 1).to(grad_f1.dtype))
    return grad_f1.view(f1.shape), grad_f2.view(f1.shape), grad_ca_down, grad_ca_up, grad_sa_weight


@_guided_attention.backward_fake
def _(grad, f1, f2, ca_down, ca_up, sa_weight, m, m_index, ca, s, s_index, sa):
    like = [f1, f2, ca_down, ca_up, sa_weight]
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in like)
