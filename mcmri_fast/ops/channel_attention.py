"""Multi-head channel ("transposed") attention, Restormer-style: per head, a channel x channel affinity
summed over all pixels (FSMNet's FS-fusion self/cross attention; IMA's CSCA, where the queries may have
another channel count than the keys). The reference is `mcmri_fast.reference.channel_attention`.

Per head h, with Q [dq, N], K and V [dk, N] its channels flattened over the N pixels:

    nq = ‖Q_i‖, nk = ‖K_j‖ (rows over pixels; 1 without normalisation),  Q̂ = Q / max(nq, eps), K̂ likewise
    Ĝ = Q̂ K̂ᵀ = (Q Kᵀ) / (max(nq, eps) max(nk, eps)ᵀ),  A = softmax(Ĝ · t_h) (rows),  out = A V

How the fused backends compute it (cpu, triton, cuda; they share this orchestration and the tiny per-head
math below, and differ only in the three N-sized passes):

* The normalised Q̂ and K̂ are never materialised. Forward: one pass over Q and K computes the raw Gram
  G = Q Kᵀ and the row norms (a reduction over all N pixels: the triton and cuda kernels split it
  across programs over pixel chunks and sum the per-chunk partials in a fixed order, deterministic);
  then the tiny per-head step on [B, heads, dq, dk] tensors, accumulated in float32 (float64 for
  float64 inputs): Ĝ = G / (max(nq, eps) max(nk, eps)ᵀ), A = softmax(Ĝ·t); then ONE pass out = A V.
* Backward: one pass gA = gO Vᵀ (the same split reduction), the tiny step
  gS = A⊙(gA − rowsum(gA⊙A)), grad_t = Σ gS⊙Ĝ, P = gS·t, then ONE pass writing all three of
      gV = Aᵀ gO,
      gQ = Mq K + diag(dq) Q,   Mq = P / (max(nq, eps) max(nk, eps)ᵀ),  dq = −rowsum(P⊙Ĝ) / max(nq, eps)²,
      gK = Mqᵀ Q + diag(dk) K,  dk = −colsum(P⊙Ĝ) / max(nk, eps)²,
  which is ((P K̂) − diag(rowsum(P⊙Ĝ)) Q̂) / nq written with the raw K and Q. Like F.normalize's
  backward, a row whose norm is below eps was divided by eps, a constant: no projection term there
  (dq = 0 for that row).
* Saved for backward: q, k, v (the inputs) and the tiny A, Ĝ and norms; nothing of size N.
* cpu: the Gram, A·V and gO Vᵀ are ATen batched GEMMs on [B·heads, d, N] views (no copies of
  contiguous float32/float64 inputs) and the norms ATen's vectorised norm (so the Gram "pass" reads Q
  and K twice there); the backward's three outputs come from one at::parallel_for pass over pixel
  chunks (vectorised loops, AVX2 where the CPU has it). triton: a Gram kernel over (b·head, pixel chunk)
  programs, an A·V kernel and the backward-pass kernel (broadcast multiply + sum for heads below 16 channels, tl.dot at 16 and more).
  cuda: the same three passes as CUDA kernels (csrc/cuda/channel_attention.cu). The tiny step runs as
  torch ops on [B, heads, d, d] tensors for every backend (on a GPU a dozen small launches).

`depthwise_channel_attention` is the attention on Restormer's depthwise 3×3 projections of q and of kv
(FSMNet's ChannelAttention): on the fused backends one op whose forward runs the depthwise stencils
(`ops.depthwise_conv3x3`'s kernels; keys and values each by their own call, so no copy splits kv at
B > 1) and the passes above, and which keeps q and kv, not the projections, for backward: the backward
recomputes them (one stencil pass each), runs the attention's backward, then the stencils' backward.
Three maps fewer kept per call (BENCHMARKS.md has FSMNet's figures), for a recomputation the size of
the forward's stencils.

The kernels: `channel_attention_gram`, `channel_attention_apply` and `channel_attention_backward_pass`,
whose contract is csrc/channel_attention.h (the C++ ops of csrc/cpu/channel_attention.cpp and
csrc/cuda/channel_attention.cu, and their Triton twins in mcmri_fast.kernels.channel_attention).
"""
import math

import torch

from .. import reference
from ..reference.channel_attention import NORM_EPS
from . import depthwise_conv
from ._checks import FLOAT_DTYPES
from ._fused import FusedOp

__all__ = ["channel_attention", "depthwise_channel_attention"]


def channel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    heads: int,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Multi-head channel attention out_h = softmax(Q̂ K̂ᵀ · t_h) V_h per head (see the module docstring).

    Args:
        q: queries [B, Cq, *spatial] (any number of spatial dims, N pixels in all).
        k: keys [B, Ck, *spatial_k] with the same pixel count N (the layout of the pixels must match q's).
        v: values, the shape of k.
        temperature: `heads` values (any shape; learnable: gradients flow to it), t_h scales head h's
            affinities before the softmax.
        heads: the number of heads; divides Cq and Ck (head h owns channels h·C/heads ... (h+1)·C/heads − 1).
        normalize: L2-normalise the rows of Q and K over the pixels first (F.normalize, eps 1e-12), as
            Restormer and FSMNet do; False uses the raw Q Kᵀ.

    q, k, v: float32 or float64, or float16/bfloat16 (accumulated in float32; the output in the input
    dtype). q, k and v share one dtype; temperature may be any floating dtype.

    Returns:
        [B, Cq, *spatial] in q's dtype. Gradients flow to q, k, v and temperature through fused kernels.
    """
    _validate(q, k, v, temperature, heads, normalize)
    backend = _channel_attention.select(q.device)
    if backend == "reference":
        return reference.channel_attention(q, k, v, temperature, heads, normalize)
    B, Cq = q.shape[:2]
    N = math.prod(q.shape[2:])
    # [B, C, N] contiguous: the kernels read each head as a [d, N] block of rows.
    flat = [t.reshape(B, t.shape[1], N).contiguous() for t in (q, k, v)]
    t = temperature.reshape(heads).to(_accumulate_dtype(q.dtype))
    out, _, _, _, _ = _channel_attention(*flat, t, heads, normalize, backend=backend)
    return out.reshape(q.shape)


def depthwise_channel_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    q_weight: torch.Tensor,
    kv_weight: torch.Tensor,
    temperature: torch.Tensor,
    heads: int,
    *,
    q_bias: torch.Tensor | None = None,
    kv_bias: torch.Tensor | None = None,
    normalize: bool = True,
) -> torch.Tensor:
    """Restormer's attention on its projections: `channel_attention(dw3×3(q), K̃, Ṽ)` with
    K̃, Ṽ = chunk(dw3×3(kv), 2) (`depthwise_conv3x3` of each input with its own weight and bias).

    The same values and gradients as the two ops in sequence, with less memory for training: on the
    fused backends the depthwise outputs Q̃, K̃, Ṽ are not kept for the backward but recomputed there
    from q and kv (one stencil pass each), so a call keeps q and kv (which the 1×1 projections before
    it keep anyway) instead of three more maps. The reference backend runs the two references.

    Args:
        q: the query projection [B, Cq, H, W].
        kv: the key and value projections, concatenated: [B, 2·Ck, H, W] (keys first).
        q_weight, kv_weight: the depthwise kernels [C, 1, 3, 3] or [C, 3, 3] of q's and kv's channels.
        temperature, heads, normalize: as `channel_attention`.
        q_bias, kv_bias: [C] or None.

    q and kv: float32, float64, float16 or bfloat16, of one dtype once promoted with their weights and
    biases. Returns [B, Cq, H, W]; gradients flow to every tensor argument.
    """
    q, q_weight, q_bias = depthwise_conv._validate(q, q_weight, q_bias)
    kv, kv_weight, kv_bias = depthwise_conv._validate(kv, kv_weight, kv_bias)
    if kv.shape[1] % 2:
        raise ValueError(f"kv must hold keys and values, an even channel count, got shape {tuple(kv.shape)}")
    if kv.dtype != q.dtype:
        raise TypeError(f"q and kv must have one dtype with their weights and biases, got {q.dtype} and {kv.dtype}")
    k, v = kv.chunk(2, dim=1)
    _validate(q, k, v, temperature, heads, normalize)
    backend = _depthwise_channel_attention.select(q.device)
    if backend == "reference":
        return reference.depthwise_channel_attention(q, kv, q_weight, kv_weight, temperature, heads, q_bias, kv_bias, normalize)
    t = temperature.reshape(heads).to(_accumulate_dtype(q.dtype))
    out, *_ = _depthwise_channel_attention(
        q, kv, q_weight.reshape(-1, 3, 3), q_bias, kv_weight.reshape(-1, 3, 3), kv_bias, t, heads, normalize,
        backend=backend,
    )
    return out


def _validate(q, k, v, temperature, heads, normalize) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("temperature", temperature)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if isinstance(heads, bool) or not isinstance(heads, int):
        raise TypeError(f"heads must be an int, got {type(heads).__name__}")
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be a bool, got {type(normalize).__name__}")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"q must be float16, bfloat16, float32 or float64, got dtype {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
    if not temperature.is_floating_point():
        raise TypeError(f"temperature must be a floating tensor, got dtype {temperature.dtype}")
    if q.dim() < 3:
        raise ValueError(f"q must be [B, Cq, *spatial] (3 or more dims), got shape {tuple(q.shape)}")
    if k.dim() < 3 or k.shape[0] != q.shape[0]:
        raise ValueError(f"k must be [B, Ck, *spatial] with B = {q.shape[0]}, got shape {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")
    n_q, n_k = math.prod(q.shape[2:]), math.prod(k.shape[2:])
    if n_q != n_k:
        raise ValueError(f"k and v must have q's pixel count N = {n_q}, got {n_k} (shape {tuple(k.shape)})")
    for name, t in (("k", k), ("v", v), ("temperature", temperature)):
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if q.shape[1] == 0 or k.shape[1] == 0:
        raise ValueError(f"q and k must have at least one channel, got Cq = {q.shape[1]}, Ck = {k.shape[1]}")
    if heads < 1 or q.shape[1] % heads or k.shape[1] % heads:
        raise ValueError(f"heads must be a positive divisor of Cq = {q.shape[1]} and Ck = {k.shape[1]}, got {heads}")
    if temperature.numel() != heads:
        raise ValueError(f"temperature must hold heads = {heads} values, got shape {tuple(temperature.shape)}")


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------------
# The tiny per-head math ([B, heads, dq, dk] tensors), shared by the fused backends


def _attention_weights(gram, q_norm, k_norm, temperature, normalize):
    """(A, Ĝ) from the raw Gram [B, h, dq, dk] and the row norms [B, h, dq], [B, h, dk]."""
    gram_hat = gram / (q_norm.clamp_min(NORM_EPS)[..., :, None] * k_norm.clamp_min(NORM_EPS)[..., None, :]) if normalize else gram
    attn = (gram_hat * temperature[None, :, None, None]).softmax(dim=-1)
    return attn, gram_hat


def _backward_coefficients(grad_attn, attn, gram_hat, q_norm, k_norm, temperature, normalize):
    """(Mq, dq, dk, grad_t) of the backward pass gQ = Mq K + diag(dq) Q, gK = Mqᵀ Q + diag(dk) K
    (module docstring), from gA = gO Vᵀ [B, h, dq, dk]."""
    grad_scores = attn * (grad_attn - (grad_attn * attn).sum(dim=-1, keepdim=True))
    grad_temperature = (grad_scores * gram_hat).sum(dim=(0, 2, 3))
    p = grad_scores * temperature[None, :, None, None]  # the gradient of Ĝ
    if not normalize:
        return p, q_norm.new_zeros(q_norm.shape), k_norm.new_zeros(k_norm.shape), grad_temperature
    rq, rk = q_norm.clamp_min(NORM_EPS), k_norm.clamp_min(NORM_EPS)
    pg = p * gram_hat
    # Below eps the norm was clamped to a constant: no gradient through it, hence no projection term.
    dq = -torch.where(q_norm >= NORM_EPS, pg.sum(dim=-1), 0.0) / rq.square()
    dk = -torch.where(k_norm >= NORM_EPS, pg.sum(dim=-2), 0.0) / rk.square()
    return p / (rq[..., :, None] * rk[..., None, :]), dq, dk, grad_temperature


# ---------------------------------------------------------------------------------------------------
# The attention: the N-sized passes on [B·heads, d, N] blocks around the tiny math


def _heads_view(t: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, C, N] -> [B·heads, C/heads, N] (a view of a contiguous tensor)."""
    B, C, N = t.shape
    return t.view(B * heads, C // heads, N)


_channel_attention = FusedOp(
    "channel_attention", kernels=("channel_attention_gram", "channel_attention_apply", "channel_attention_backward_pass")
)


@_channel_attention.forward
def _(kern, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor, heads: int, normalize: bool
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, Cq, N], k and v [B, Ck, N], contiguous; temperature [heads] in the accumulation dtype.
    Returns (out [B, Cq, N], then for the backward: A and Ĝ [B, heads, dq, dk], the row norms of Q
    [B, heads, dq] and K [B, heads, dk], ones without normalisation)."""
    B, Cq, N = q.shape
    Ck = k.shape[1]
    g, q_norm, k_norm = kern.channel_attention_gram(_heads_view(q, heads), _heads_view(k, heads), normalize)
    g = g.view(B, heads, Cq // heads, Ck // heads)
    if normalize:
        q_norm, k_norm = q_norm.view(B, heads, -1), k_norm.view(B, heads, -1)
    else:
        q_norm, k_norm = g.new_ones((B, heads, Cq // heads)), g.new_ones((B, heads, Ck // heads))
    attn, gram_hat = _attention_weights(g, q_norm, k_norm, temperature, normalize)
    out = kern.channel_attention_apply(attn.view(B * heads, Cq // heads, Ck // heads), _heads_view(v, heads))
    return out.view(B, Cq, N), attn, gram_hat, q_norm, k_norm


def _tiny_fakes(q, temperature, heads, dq, dk):
    """The fakes of the attention's tiny outputs: A, Ĝ [B, heads, dq, dk] and the norms."""
    tiny = q.new_empty((q.shape[0], heads, dq, dk), dtype=temperature.dtype)
    return tiny, torch.empty_like(tiny), tiny.new_empty((q.shape[0], heads, dq)), tiny.new_empty((q.shape[0], heads, dk))


@_channel_attention.fake
def _(q, k, v, temperature, heads, normalize):
    return (torch.empty_like(q), *_tiny_fakes(q, temperature, heads, q.shape[1] // heads, k.shape[1] // heads))


def _save_for_backward(ctx, inputs, tiny, heads, normalize, backend):
    """Saves the inputs and the tiny outputs (A, Ĝ, norms: non-differentiable, and ignored when their
    gradients are not materialised)."""
    ctx.mark_non_differentiable(*tiny)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(*inputs, *tiny)
    ctx.heads, ctx.normalize, ctx.backend = heads, normalize, backend


def _attention_setup_context(ctx, inputs, output):
    q, k, v, temperature, heads, normalize, backend = inputs
    _save_for_backward(ctx, (q, k, v, temperature), output[1:], heads, normalize, backend)


def _attention_autograd(ctx, grad, *_grad_tiny):
    if grad is None:  # gradients are not materialised: nothing flows back
        return (None,) * 7
    grads = _channel_attention.backward_op(grad, *ctx.saved_tensors, ctx.heads, ctx.normalize, ctx.backend)
    return tuple(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:4])) + (None,) * 3


@_channel_attention.backward(setup_context=_attention_setup_context, autograd=_attention_autograd)
def _(kern, grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
      attn: torch.Tensor, gram_hat: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor, heads: int,
      normalize: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """grad [B, Cq, N] (any strides); the rest as the forward took and returned them.
    Returns (grad_q, grad_k, grad_v, grad_temperature)."""
    B = q.shape[0]
    dq, dk = attn.shape[-2:]
    grad = grad.contiguous()
    grad_attn, _, _ = kern.channel_attention_gram(_heads_view(grad, heads), _heads_view(v, heads), False)
    mq, coef_q, coef_k, grad_temperature = _backward_coefficients(
        grad_attn.view(B, heads, dq, dk), attn, gram_hat, q_norm, k_norm, temperature, normalize
    )
    grad_q, grad_k, grad_v = kern.channel_attention_backward_pass(
        _heads_view(q, heads),
        _heads_view(k, heads),
        _heads_view(grad, heads),
        attn.reshape(B * heads, dq, dk),
        mq.reshape(B * heads, dq, dk),
        coef_q.reshape(B * heads, dq),
        coef_k.reshape(B * heads, dk),
    )
    return grad_q.view(q.shape), grad_k.view(k.shape), grad_v.view(v.shape), grad_temperature


@_channel_attention.backward_fake
def _(grad, q, k, v, temperature, attn, gram_hat, q_norm, k_norm, heads, normalize):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(temperature)


# ---------------------------------------------------------------------------------------------------
# Depthwise projections and attention in one op: the depthwise outputs are recomputed in backward


def _halves(t: torch.Tensor | None):
    """The keys' and the values' parts of kv (or of its weight / bias) along dim 1 (dim 0 for those)."""
    if t is None:
        return None, None
    return t.chunk(2, dim=1 if t.dim() == 4 else 0)


def _depthwise_projections(q, kv, q_weight, q_bias, kv_weight, kv_bias, backend):
    """(Q̃, K̃, Ṽ) as [B, C, N] contiguous: keys and values each by their own stencil call, so neither
    needs a copy out of the interleaved [B, 2Ck, N] layout at B > 1."""
    # the registered op (not the bare kernel): the backward, which recomputes these, is traced under compile
    (k, v), (k_weight, v_weight), (k_bias, v_bias) = _halves(kv), _halves(kv_weight), _halves(kv_bias)
    parts = ((q, q_weight, q_bias), (k, k_weight, k_bias), (v, v_weight, v_bias))
    outs = [depthwise_conv._depthwise_conv3x3(x, weight, bias, backend=backend) for x, weight, bias in parts]
    return [o.view(o.shape[0], o.shape[1], -1) for o in outs]


# Built on the depthwise convolution's and the attention's fused ops: no kernels of its own.
_depthwise_channel_attention = FusedOp("depthwise_channel_attention")


@_depthwise_channel_attention.forward
def _(kern, q: torch.Tensor, kv: torch.Tensor, q_weight: torch.Tensor, q_bias: torch.Tensor | None,
      kv_weight: torch.Tensor, kv_bias: torch.Tensor | None, temperature: torch.Tensor, heads: int, normalize: bool
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, Cq, H, W], kv [B, 2Ck, H, W]; weights [C, 3, 3]; temperature [heads] in the accumulation
    dtype. Returns (out [B, Cq, H, W], A, Ĝ and the row norms: the attention op's tiny outputs)."""
    projections = _depthwise_projections(q, kv, q_weight, q_bias, kv_weight, kv_bias, kern.backend)
    out, *tiny = _channel_attention(*projections, temperature, heads, normalize, backend=kern.backend)
    return (out.view(q.shape), *tiny)


@_depthwise_channel_attention.fake
def _(q, kv, q_weight, q_bias, kv_weight, kv_bias, temperature, heads, normalize):
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    return (out, *_tiny_fakes(q, temperature, heads, q.shape[1] // heads, kv.shape[1] // 2 // heads))


def _depthwise_attention_setup_context(ctx, inputs, output):
    q, kv, q_weight, q_bias, kv_weight, kv_bias, temperature, heads, normalize, backend = inputs
    # The inputs, not the depthwise outputs: those are recomputed (the memory this op exists to save).
    _save_for_backward(ctx, (q, kv, q_weight, q_bias, kv_weight, kv_bias, temperature), output[1:], heads, normalize,
                       backend)


@_depthwise_channel_attention.autograd(setup_context=_depthwise_attention_setup_context)
def _(ctx, grad, *_grad_tiny):
    if grad is None:
        return (None,) * 10
    q, kv, q_weight, q_bias, kv_weight, kv_bias, temperature, attn, gram_hat, q_norm, k_norm = ctx.saved_tensors
    B = q.shape[0]
    projections = _depthwise_projections(q, kv, q_weight, q_bias, kv_weight, kv_bias, ctx.backend)
    grad_projections = _channel_attention.backward_op(
        grad.reshape(B, q.shape[1], -1), *projections, temperature, attn, gram_hat, q_norm, k_norm, ctx.heads, ctx.normalize,
        ctx.backend,
    )
    need = ctx.needs_input_grad
    grad_q, grad_k, grad_v, grad_temperature = grad_projections
    (k, v), (k_weight, v_weight) = _halves(kv), _halves(kv_weight)
    q_grads = _depthwise_backward(grad_q, q, q_weight, need[0], need[2], need[3] and q_bias is not None, ctx.backend)
    k_grads = _depthwise_backward(grad_k, k, k_weight, need[1], need[4], need[5] and kv_bias is not None, ctx.backend)
    v_grads = _depthwise_backward(grad_v, v, v_weight, need[1], need[4], need[5] and kv_bias is not None, ctx.backend)
    # keys' and values' gradients side by side, as in kv (channels: dim 1 of maps, dim 0 of weights and biases)
    kv_grads = [None if gk is None else torch.cat((gk, gv), dim=1 if gk.dim() == 4 else 0)
                for gk, gv in zip(k_grads, v_grads)]
    return (q_grads[0], kv_grads[0], q_grads[1], q_grads[2], kv_grads[1], kv_grads[2],
            grad_temperature if need[6] else None, None, None, None)


def _depthwise_backward(grad, x, weight, need_x, need_weight, need_bias, backend):
    """(grad_x, grad_weight, grad_bias) of one depthwise call, None for each one not asked for; grad [B, C, N]."""
    grads = depthwise_conv._depthwise_conv3x3.backward_op(
        grad.view(x.shape), x, weight, need_x, need_weight, need_bias, backend
    )
    return tuple(g if needed else None for g, needed in zip(grads, (need_x, need_weight, need_bias)))
