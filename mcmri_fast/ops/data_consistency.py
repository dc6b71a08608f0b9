"""Data consistency: replace the sampled part of an image's k-space by the measured k-space.

    out = Fᴴ[(1 − w·M) ⊙ F x + w·M ⊙ k0]

F is the orthonormal 2-D FFT, centred (fastMRI `fft2c`, the default) or uncentred; M is the binary
sampling mask; w is the DC weight (w = 1: hard DC; 0 < w < 1: soft DC, learnable, a scalar or one per
channel). The reference implementation is `mcmri_fast.reference.data_consistency`.

How the fused backends compute it (cpu, cuda, triton; they differ only in the blend kernel):

* No fftshift copies. The centred transform is a roll of the uncentred one, and conjugating the
  uncentred DC by that roll turns into reading k0 and M at shifted indices times a separable phase
  exp(−2πi·k·s/N) (s = N//2) in the uncentred spectrum. So the forward pass is fft2 → one blend pass
  that reads k0 and M through the index shift and phase → ifft2.
* With a 1-D column mask (M depends on the column only), Fᴴ M F = F_wᴴ M F_w: the blend runs in the
  hybrid space (image rows, k-space columns) after a 1-D FFT along W, with k0 brought to that space
  by a 1-D inverse FFT along H. The 2-D path stays for 2-D masks.
* On CPU the column path touches the sampled columns only (`dc_blend_columns_` ops): the blend reads
  k0 there alone and grad_k0 is zero elsewhere, so the FFTs along H, the kept spectrum and grad_k0's
  source are per-column buffers [B, C, H, n], a quarter to a third of the full ones at 4x. (The full
  FFTs along H were the largest cost of the CPU column path: BENCHMARKS.md.) The GPU backends blend
  full buffers: listing the columns needs their count on the host, a synchronisation.
* Backward is the same structure: grad_x = Fᴴ[(1 − wM) F g], grad_k0 = wM F g (back at k0's
  indices), grad_w = Re Σ conj(F g)·M·(k0 − F x). The forward keeps what the backward reads: the
  hybrid k0 of the column path, and F x when w needs a gradient (a copy, cheaper than a second FFT;
  the column kernels write it during the blend, at the sampled columns).

Every fused backend runs every mask. The kernels: `dc_blend_` and `dc_blend_backward_` (the C++ ops of
csrc/cpu/data_consistency.cpp and csrc/cuda/data_consistency.cu, and their Triton twins in
mcmri_fast.kernels.data_consistency) and the CPU-only `dc_blend_columns_` and
`dc_blend_columns_backward_`; their contract is csrc/data_consistency.h.
"""
import functools
import math
import numbers

import torch

from .. import reference
from ._checks import canonical_mask
from ._fused import ALL_BACKENDS, FusedOp

__all__ = ["data_consistency", "dunsa_data_consistency"]


# ---------------------------------------------------------------------------------------------------
# Public API: validation and dispatch


def data_consistency(
    x: torch.Tensor,
    k0: torch.Tensor,
    mask: torch.Tensor,
    weight: float | torch.Tensor = 1.0,
    *,
    centered: bool = True,
) -> torch.Tensor:
    """Data consistency out = Fᴴ[(1 − w·M) ⊙ F x + w·M ⊙ k0] (orthonormal F, centred by default).

    Args:
        x: image [B, C, H, W], complex, or real (taken as complex with zero imaginary part).
        k0: measured k-space [B, C, H, W] or [B, 1, H, W] (shared by the channels), complex, in the
            convention of `centered` (fastMRI's centred k-space by default).
        mask: binary sampling mask (bool, or 0/1 numbers): [W] (1-D, selects columns), [H, W] (2-D),
            [B, W] (1-D per sample) or [B, 1, H, W] (2-D per sample). Bool masks skip the value check
            (which synchronises a GPU); pass bool in hot loops.
        weight: w, a number, or a real tensor of 1 or C elements (learnable: gradients flow to it).
        centered: F = fft2c (True, fastMRI convention) or the uncentred fft2 (False).

    Returns:
        [B, C, H, W] complex (complex128 if any input is double precision, else complex64).

    Gradients flow to x, k0 and weight through fused backward kernels. With w = 1 the sampled
    k-space is replaced (hard DC); DUN-SA's closed form is `dunsa_data_consistency`.
    """
    x, k0, mask, weight = _validate(x, k0, mask, weight, centered)
    backend = _dc.select(x.device)
    if backend == "reference":
        return reference.data_consistency(x, k0, mask.unsqueeze(1), weight, centered)
    keep_spectrum = weight.requires_grad and torch.is_grad_enabled()
    out, _, _ = _dc(x, k0, mask, weight, centered, keep_spectrum, backend=backend)
    return out


def dunsa_data_consistency(
    z: torch.Tensor,
    k0: torch.Tensor,
    mask: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    s: torch.Tensor | None = None,
    beta_s: float | torch.Tensor | None = None,
    centered: bool = True,
) -> torch.Tensor:
    """DUN-SA's closed-form DC step (eq. 11, step 4 of its iteration), with one prior or two:

        Fᴴ[(M k0 + β F z) / (M + β)]                         (s None)
        Fᴴ[(M k0 + β F z + β_s F s) / (M + β + β_s)]         (the paper's z and s, β₁ = beta, β₂ = beta_s)

    Where M = 1 the one-prior form is (k0 + β F z)/(1 + β) = F z + (k0 − F z)/(1 + β), where M = 0 it is
    F z: the same op as `data_consistency` with w = 1/(1 + β). F is linear, so the two-prior form is it
    with z replaced by the priors' weighted mean u = (β z + β_s s)/(β + β_s) and β by β + β_s: one fused
    DC pass either way, the mean one pointwise pass before it.
    beta, beta_s: positive numbers or real tensors of 1 or C elements (learnable). z, s: like
    `data_consistency`'s x (s of z's shape). Shapes, dtypes and `centered` as `data_consistency`.
    """
    beta = _positive("beta", beta)
    if s is None:
        if beta_s is not None:
            raise ValueError("beta_s weighs the second prior s: pass s with it")
        return data_consistency(z, k0, mask, 1.0 / (1.0 + beta), centered=centered)
    if beta_s is None:
        raise ValueError("the second prior s needs its weight beta_s")
    beta_s = _positive("beta_s", beta_s)
    for name, t in (("z", z), ("s", s)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if s.shape != z.shape:
        raise ValueError(f"s must have z's shape {tuple(z.shape)}, got {tuple(s.shape)}")
    total = beta + beta_s
    u = (_per_channel(beta) * z + _per_channel(beta_s) * s) / _per_channel(total)
    return data_consistency(u, k0, mask, 1.0 / (1.0 + total), centered=centered)


def _per_channel(weight):
    """A number, or a weight tensor of 1 or C elements shaped to broadcast over [B, C, H, W]."""
    return weight.reshape(-1, 1, 1) if isinstance(weight, torch.Tensor) else weight


def _positive(name: str, value):
    """A weight of the DUN-SA step: a positive number (checked) or a real tensor (learnable)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
        return float(value)
    if isinstance(value, torch.Tensor):
        return value
    raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")


def _is_real_or_complex(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def _validate(x, k0, mask, weight, centered):
    """Checks the arguments and brings them to the forms the implementations take:
    x, k0 complex of one dtype; mask bool [Bm, Hm, W]; weight real [1] or [C]."""
    for name, t in (("x", x), ("k0", k0), ("mask", mask)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be a bool, got {type(centered).__name__}")
    if not _is_real_or_complex(x):
        raise TypeError(f"x must be a complex or real floating tensor, got dtype {x.dtype}")
    if not _is_real_or_complex(k0):
        raise TypeError(f"k0 must be a complex (or real floating) tensor, got dtype {k0.dtype}")
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    if k0.dim() != 4 or k0.shape[0] != B or k0.shape[1] not in (1, C) or k0.shape[2:] != (H, W):
        raise ValueError(f"k0 must be [B, C, H, W] or [B, 1, H, W] = [{B}, {C} or 1, {H}, {W}], got shape {tuple(k0.shape)}")
    for name, t in (("k0", k0), ("mask", mask)):
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")

    mask = canonical_mask(mask, B, H, W)

    real_dtype = torch.float64 if torch.float64 in (x.dtype, k0.dtype) or torch.complex128 in (x.dtype, k0.dtype) else torch.float32
    complex_dtype = torch.complex128 if real_dtype == torch.float64 else torch.complex64
    x = x.to(complex_dtype)
    k0 = k0.to(complex_dtype)

    if isinstance(weight, numbers.Real) and not isinstance(weight, bool):
        weight = torch.full((1,), float(weight), dtype=real_dtype, device=x.device)
    elif isinstance(weight, torch.Tensor):
        if not weight.is_floating_point():
            raise TypeError(f"weight must be a real floating tensor, got dtype {weight.dtype}")
        if weight.device != x.device:
            raise ValueError(f"weight must be on x's device {x.device}, got {weight.device}")
        if weight.numel() not in (1, C) or sum(s != 1 for s in weight.shape) > 1:
            raise ValueError(f"weight must hold 1 or C = {C} values (a scalar or one per channel), got shape {tuple(weight.shape)}")
        weight = weight.to(real_dtype).reshape(-1)
    else:
        raise TypeError(f"weight must be a number or a torch.Tensor, got {type(weight).__name__}")
    return x, k0, mask, weight


# ---------------------------------------------------------------------------------------------------
# Fused implementation

# Every backend runs every mask: column masks take the column kernels on cpu and the full blend in the
# hybrid space on cuda and triton (_uses_column_kernels); 2-D masks take the full blend everywhere.
_dc = FusedOp("data_consistency", kernels=("dc_blend_", "dc_blend_backward_"), supported=ALL_BACKENDS)


@functools.lru_cache(maxsize=128)
def _geometry(H: int, W: int, centered: bool, column: bool, dtype: torch.dtype, device: torch.device):
    """(phase_h [H], phase_w [W], shift_h, shift_w) of the blend kernel.

    The blend reads k0 (or, on the column path, ifft_H(k0)) and the mask at row (i + shift_h) mod H
    and column (j + shift_w) mod W, times phase_h[i]·phase_w[j]; see the module docstring.
    """
    def phase(n: int, s: int, index: torch.Tensor) -> torch.Tensor:
        exponent = (index * s) % n  # integer first: exact for any size
        return torch.polar(torch.ones(n, dtype=torch.float64), exponent.to(torch.float64) * (-2 * math.pi / n))

    rows, cols = torch.arange(H), torch.arange(W)
    if not centered:
        phase_h, phase_w, shift_h, shift_w = torch.ones(H), torch.ones(W), 0, 0
    else:
        sh, sw = H // 2, W // 2
        phase_w, shift_w = phase(W, sw, cols), sw
        if column:
            # centred inverse FFT along H: ifftc(k)[n] = exp(-2πi·s·n'/H)·ifft(k)[n'], n' = (n − s) mod H
            source_rows = (rows - sh) % H
            phase_h, shift_h = phase(H, sh, source_rows), (H - sh) % H
        else:
            phase_h, shift_h = phase(H, sh, rows), sh
    return phase_h.to(device=device, dtype=dtype), phase_w.to(device=device, dtype=dtype), shift_h, shift_w


def _uses_column_kernels(mask: torch.Tensor, backend: str) -> bool:
    """Whether the blend runs on the sampled columns only (the `dc_blend_columns_` ops): for column
    masks on CPU. Listing the columns needs their count on the host, which on a GPU is a
    synchronisation, so the GPU backends blend full buffers."""
    return backend == "cpu" and mask.shape[1] == 1


def _sampled_columns(mask: torch.Tensor) -> torch.Tensor:
    """The columns [n] (int64, increasing) that any sample's column mask [Bm, 1, W] selects."""
    return mask.reshape(-1, mask.shape[-1]).any(dim=0).nonzero().reshape(-1)


def _transforms(column: bool):
    """(F, Fᴴ) of the blend space: along W only for column masks, 2-D otherwise (orthonormal, uncentred)."""
    if column:
        return (functools.partial(torch.fft.fft, dim=-1, norm="ortho"), functools.partial(torch.fft.ifft, dim=-1, norm="ortho"))
    return functools.partial(torch.fft.fft2, norm="ortho"), functools.partial(torch.fft.ifft2, norm="ortho")


def _kernel_args(x, src, mask, weight, centered):
    """The blend kernels' arguments after the spectrum: src, mask and weight broadcast to
    [B, C, H, W], [B, H, W] and [C] (stride 0, no copies), then phase_h, phase_w, shift_h, shift_w."""
    B, C, H, W = x.shape
    column = mask.shape[1] == 1
    geometry = _geometry(H, W, centered, column, x.dtype, x.device)
    return (src.expand(B, C, H, W), mask.view(torch.uint8).expand(B, H, W), weight.expand(C)) + geometry


def _column_kernel_args(x, src, columns, mask, weight, centered):
    """The column kernels' arguments after the spectrum: src [B, C, H, n], columns, mask uint8 [B, W]
    and weight [C] (broadcast by stride 0), then phase_h, phase_w, shift_h, shift_w."""
    B, C, H, W = x.shape
    geometry = _geometry(H, W, centered, True, x.dtype, x.device)
    mask = mask.view(torch.uint8).reshape(-1, W).expand(B, W)
    return (src.expand(B, C, H, columns.numel()), columns, mask, weight.expand(C)) + geometry


def _h_major(like: torch.Tensor, channels: int) -> torch.Tensor:
    """An empty [B, channels, H, W] tensor like `like` [B, C, H, W], with H-major strides."""
    B, _, H, W = like.shape
    return like.new_empty((B, channels, W, H)).transpose(-1, -2)


def _hybrid_columns(k0: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """ifft_H(k0) at the given columns: [B, Ck, H, n] with H-major strides, made by a contiguous FFT
    of the gathered columns (a layout the fake implementation can state)."""
    picked = k0.transpose(-1, -2).index_select(-2, columns)  # [B, Ck, n, H], contiguous
    if columns.numel() == 0:  # no column sampled: MKL refuses an empty batch of transforms
        return picked.transpose(-1, -2)
    return torch.fft.ifft(picked, dim=-1, norm="ortho").transpose(-1, -2)


@_dc.forward
def _(k, x: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, centered: bool,
      keep_spectrum: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (out, src, spectrum), the last two for the backward:
    src: what the blend read: k0 on the 2-D path (returned empty, the backward takes k0 itself),
    ifft_H(k0) on the column path ([B, Ck, H, n] at the sampled columns with the column kernels);
    spectrum: F x before the blend (at the sampled columns with the column kernels), which the weight
    gradient needs (empty unless keep_spectrum)."""
    column = mask.shape[1] == 1
    forward, inverse = _transforms(column)
    spec = forward(x).contiguous()
    if _uses_column_kernels(mask, k.backend):
        columns = _sampled_columns(mask)
        hybrid = _hybrid_columns(k0, columns)
        B, C, H, _ = x.shape
        kept = x.new_empty((B, C, H, columns.numel())) if keep_spectrum else None
        args = _column_kernel_args(x, hybrid, columns, mask, weight, centered)
        torch.ops.mcmri_fast.dc_blend_columns_(spec, *args, kept)
        return inverse(spec), hybrid, kept if keep_spectrum else x.new_empty(0)
    # The kernels take src through its strides: the FFT along H may return any layout.
    hybrid = torch.fft.ifft(k0, dim=-2, norm="ortho") if column else k0.new_empty(0)
    # A copy costs a fraction of the FFT that the backward would otherwise redo for it.
    spectrum = spec.clone() if keep_spectrum else x.new_empty(0)
    k.dc_blend_(spec, *_kernel_args(x, hybrid if column else k0, mask, weight, centered))
    return inverse(spec), hybrid, spectrum


@_dc.fake(backend=True)
def _(x, k0, mask, weight, centered, keep_spectrum, backend):
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    empty = x.new_empty(0)
    if _uses_column_kernels(mask, backend):
        B, C, H, _ = x.shape
        n = torch.library.get_ctx().new_dynamic_size()  # the number of sampled columns
        hybrid = k0.new_empty((B, k0.shape[1], n, H)).transpose(-1, -2)  # the layout of _hybrid_columns
        return out, hybrid, x.new_empty((B, C, H, n)) if keep_spectrum else empty
    hybrid = torch.fft.ifft(k0, dim=-2, norm="ortho") if mask.shape[1] == 1 else k0.new_empty(0)
    return out, hybrid, torch.empty_like(out) if keep_spectrum else empty


def _setup_context(ctx, inputs, output):
    _, k0, mask, weight, centered, keep_spectrum, backend = inputs
    _, hybrid, spectrum = output
    ctx.mark_non_differentiable(hybrid, spectrum)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for those two: backward ignores them
    # Backward needs what the blend read (hybrid or k0) and, for the weight gradient, the spectrum.
    ctx.save_for_backward(hybrid if mask.shape[1] == 1 else k0, spectrum, mask, weight)
    ctx.centered, ctx.backend, ctx.kept_spectrum = centered, backend, keep_spectrum


def _autograd(ctx, grad, _grad_hybrid, _grad_spectrum):
    if grad is None:  # gradients are not materialised: nothing flows back
        return (None,) * 7
    src, spectrum, mask, weight = ctx.saved_tensors
    need_x, need_k0, _, need_weight = ctx.needs_input_grad[:4]
    if need_weight and not ctx.kept_spectrum:
        raise RuntimeError("data_consistency: the weight needs a gradient but its forward kept no spectrum")
    grad_x, grad_k0, grad_weight = _dc.backward_op(
        grad, src, spectrum, mask, weight, ctx.centered, need_k0, need_weight, ctx.backend
    )
    return (
        grad_x if need_x else None,
        grad_k0 if need_k0 else None,
        None,
        grad_weight if need_weight else None,
        None,
        None,
        None,
    )


@_dc.backward(setup_context=_setup_context, autograd=_autograd)
def _(k, grad: torch.Tensor, src: torch.Tensor, spectrum: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
      centered: bool, need_k0_grad: bool, need_weight_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """src and spectrum: what the forward returned (src: k0 itself on the 2-D path). Returns
    (grad_x, grad_k0, grad_weight), the last two empty when not needed."""
    B, C, H, W = grad.shape
    column = mask.shape[1] == 1
    shared = src.shape[1] == 1 and C > 1  # k0 broadcast over the channels: their gradients are summed
    forward, inverse = _transforms(column)
    grad_spec = forward(grad).contiguous()
    kept = spectrum if need_weight_grad else None
    if _uses_column_kernels(mask, k.backend):
        columns = _sampled_columns(mask)
        grad_src = None
        if need_k0_grad:
            # H-major when it goes straight into the FFT along H, row-major when the channels are summed
            # first, which then writes the FFT's input (measured: BENCHMARKS.md, data_consistency).
            n = columns.numel()
            grad_src = grad.new_empty((B, C, H, n)) if shared else grad.new_empty((B, C, n, H)).transpose(-1, -2)
        args = _column_kernel_args(grad, src, columns, mask, weight, centered)
        grad_weight_rows = torch.ops.mcmri_fast.dc_blend_columns_backward_(grad_spec, *args, kept, grad_src)
    else:
        # Row-major: an H-major grad_src (which the FFT along H would prefer) makes the kernels scatter
        # with a power-of-two stride, which thrashed the CPU caches (BENCHMARKS.md, data_consistency).
        grad_src = grad.new_empty((B, C, H, W)) if need_k0_grad else None
        grad_weight_rows = k.dc_blend_backward_(grad_spec, *_kernel_args(grad, src, mask, weight, centered), kept,
                                                grad_src)
    grad_x = inverse(grad_spec)

    grad_k0 = grad.new_empty(0)
    if need_k0_grad:
        grad_k0 = grad_src.sum(dim=1, keepdim=True) if shared else grad_src
        if column and grad_k0.numel() > 0:  # src = ifft_H(k0), so grad_k0 = fft_H(grad_src)
            grad_k0 = torch.fft.fft(grad_k0, dim=-2, norm="ortho")
        if _uses_column_kernels(mask, k.backend):  # those were the sampled columns: the others are zero
            sampled = grad_k0
            grad_k0 = _h_major(grad, sampled.shape[1]).zero_()
            grad_k0.transpose(-1, -2).index_copy_(2, columns, sampled.transpose(-1, -2))
    grad_weight = weight.new_empty(0)
    if need_weight_grad:
        grad_weight = grad_weight_rows.reshape(B, C, -1).sum(dim=(0, 2))
        if weight.numel() == 1:
            grad_weight = grad_weight.sum().reshape(weight.shape)
    return grad_x, grad_k0, grad_weight


@_dc.backward_fake(backend=True)
def _(grad, src, spectrum, mask, weight, centered, need_k0_grad, need_weight_grad, backend):
    B, C, H, W = grad.shape
    grad_k0 = src.new_empty(0)
    if need_k0_grad:
        grad_k0 = grad.new_empty((B, src.shape[1], H, W))
        if _uses_column_kernels(mask, backend):
            grad_k0 = _h_major(grad, src.shape[1])
        elif mask.shape[1] == 1:
            # it comes out of an FFT along H: the FFT's meta function gives its strides
            grad_k0 = torch.fft.fft(grad_k0, dim=-2, norm="ortho")
    grad_weight = torch.empty_like(weight) if need_weight_grad else weight.new_empty(0)
    return torch.empty_like(grad, memory_format=torch.contiguous_format), grad_k0, grad_weight
