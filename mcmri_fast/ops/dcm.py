"""IMA's dilation-contraction masking (DCM, Zhang et al., "Breaking Information Isolation: Accelerating
MRI via Inter-sequence Mapping and Progressive Masking", eqs. 15–19): the mask schedule and one stage's
data-consistency step.

`dcm_schedule(mask, stages)`: the masks M⁰ … M^T of the stages. Dilation (eq. 16): M^{t+1} = 1 where
φ ⋆ Mᵗ ≥ δ or M⁰ = 1, φ a fixed kernel (3 × 3 ones by default: a point joins when at least δ = 3 of its
3 × 3 neighbourhood are known, so lines and filled regions spread and isolated samples do not), until
the known fraction exceeds `ratio` (0.9) or T/2 dilations are done (eq. 17); contraction then retraces
the same masks back to M⁰, which the remaining stages keep. Our choices where the paper is open: k-space
is periodic, so φ wraps around the edges (a column mask stays a column mask, and its 1-D schedule is the
2-D one); the peak is at most T // 2 so the contraction ends at M⁰ by the last stage (12 stages: 6 up,
6 down). The schedule depends on M⁰ alone: it is cached, by content for CPU masks and by the tensor
itself for others (reading a GPU mask's content would synchronise).

`dcm_data_consistency(x, z, g, r, mask, dilated_mask, step, alpha, lam)`: eqs. 15, 18 and 19 in one op,
with K = F x, K⁰ = M⁰ F z (the measurement is known where sampled), d = α(x − g) + λ r:

    X_temp = F⁻¹[K − μ(M⁰K − K⁰)] − μ d;   X̂ = F⁻¹[(1 − Mᵗ) F X_temp + Mᵗ K];
    out = Re F⁻¹[(1 − M⁰) F X̂ + M⁰ K⁰]

(`mcmri_fast.reference.dcm_data_consistency`, three FFTs and three inverse FFTs of complex C-channel
maps). X stays real (the paper's X ∈ R^{HW×C}): the real part is taken once, at the end. For binary masks
the three steps collapse: with U = M⁰ ∨ Mᵗ and P_M y = Re F⁻¹[M F y],

    out = x − μ d + P_{M⁰}(z − x) + μ P_U(d)

and for real y, P_M y = irfft(m̄ · rfft y) with m̄(k) = (M(k) + M(−k)) / 2 on the half spectrum (the
Hermitian part of M F y). So the fused backends run two real FFTs (of z − x and d, as one call) and one
inverse, a quarter of the reference's transforms; the fftshift of centred masks is applied to the masks
(the image-domain shift commutes with a masked projection), and column masks take 1-D FFTs along W (the
FFT along H cancels). The pointwise work is three passes: the FFTs' input, the blend of the two spectra,
and the output (d recomputed from x, g, r rather than kept). Backward: one real FFT of the gradient, the
two projections as one inverse call, one pass for every gradient (P is self-adjoint):
w = P_U grad − grad, grad_x = grad − P_{M⁰} grad + αμ w, grad_z = P_{M⁰} grad, grad_g = −αμ w,
grad_r = λμ w, grad_μ = Σ d w, grad_α = μ Σ (x − g) w, grad_λ = μ Σ r w. It keeps x, g and r, which the
network keeps anyway.

The kernels: `dcm_prologue`, `dcm_blend`, `dcm_epilogue`, `dcm_split` and `dcm_backward` (the C++ ops of
csrc/cpu/dcm.cpp and csrc/cuda/dcm.cu, and their Triton twins in mcmri_fast.kernels.dcm); their contract
is csrc/dcm.h.
"""
import collections
import hashlib
import numbers
import weakref

import torch
import torch.nn.functional as F

from .. import reference
from ._checks import canonical_mask, promoted_float_dtype
from ._fused import FusedOp

__all__ = ["dcm_schedule", "dcm_data_consistency"]

DELTA = 3.0
RATIO = 0.9
CACHE_SIZE = 64


# ---------------------------------------------------------------------------------------------------
# The schedule


def default_kernel() -> torch.Tensor:
    """φ: the 3 × 3 kernel of ones (the diffusion kernel the paper leaves open)."""
    return torch.ones(3, 3)


def dcm_schedule(
    mask: torch.Tensor,
    stages: int,
    *,
    kernel: torch.Tensor | None = None,
    delta: float = DELTA,
    ratio: float = RATIO,
) -> torch.Tensor:
    """The DCM masks M⁰ … M^T of `stages` = T stages (see the module docstring).

    Args:
        mask: M⁰, bool or 0/1, centred k-space: [W] or [*batch, 1, W] (column masks) or [*batch, H, W]
            (H > 1: 2-D masks); each mask of the batch has its own schedule.
        stages: T ≥ 1.
        kernel: φ, a real 2-D tensor of odd sizes no larger than the mask (default 3 × 3 ones; column
            masks use its column sums).
        delta: δ, the threshold of φ ⋆ M.
        ratio: dilation stops once the known fraction exceeds it, in [0, 1].

    Returns:
        bool [T + 1, *mask.shape]: entry t is the mask of stage t (entry 0 is M⁰). Cached: the same
        tensor is returned for a mask seen again; treat it as read-only.
    """
    kernel = default_kernel() if kernel is None else kernel
    _check_schedule_args(mask, stages, kernel, delta, ratio)
    if torch.compiler.is_compiling():
        return _schedule(mask, stages, kernel, float(delta), float(ratio))
    key = (tuple(mask.shape), str(mask.device), stages, tuple(kernel.flatten().tolist()), tuple(kernel.shape),
           float(delta), float(ratio))
    return _SCHEDULES.get(mask, key, lambda: _schedule(mask, stages, kernel, float(delta), float(ratio)))


def _check_schedule_args(mask, stages, kernel, delta, ratio):
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.is_complex() or mask.dim() == 0:
        raise ValueError(f"mask must be a real or bool [W], [*batch, 1, W] or [*batch, H, W] tensor, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    if mask.dtype != torch.bool and not torch.compiler.is_compiling() and bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("mask must be binary (only 0 and 1), got other values")
    if not isinstance(stages, numbers.Integral) or isinstance(stages, bool) or stages < 1:
        raise ValueError(f"stages must be a positive integer, got {stages!r}")
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != 2 or not kernel.is_floating_point():
        raise ValueError(f"kernel must be a real 2-D tensor, got {getattr(kernel, 'shape', type(kernel).__name__)}")
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel must have odd sizes (a centre), got {tuple(kernel.shape)}")
    H, W = (1, mask.shape[-1]) if mask.dim() == 1 or mask.shape[-2] == 1 else mask.shape[-2:]
    if kw // 2 > W or (H > 1 and kh // 2 > H):
        raise ValueError(f"kernel {tuple(kernel.shape)} is larger than the mask's planes {H} x {W}")
    if not isinstance(delta, numbers.Real) or isinstance(delta, bool):
        raise TypeError(f"delta must be a number, got {type(delta).__name__}")
    if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")


def _schedule(mask: torch.Tensor, stages: int, kernel: torch.Tensor, delta: float, ratio: float) -> torch.Tensor:
    """Tensor ops only (no host synchronisation, traceable): every sample dilates T // 2 times, a sample
    that has stopped keeps its mask, and the stage masks are gathered from its peak k as
    D[max(0, k − |t − k|)]."""
    shape = mask.shape
    column = mask.dim() == 1 or shape[-2] == 1
    planes = mask.reshape(-1, 1, shape[-1]) if column else mask.reshape(-1, 1, shape[-2], shape[-1])
    m0 = planes != 0
    dtype = torch.promote_types(kernel.dtype, torch.float32)
    weight = kernel.to(device=mask.device, dtype=dtype)
    if column:
        weight = weight.sum(0)
        pad, conv = (weight.shape[0] // 2,) * 2, F.conv1d
    else:
        pad, conv = (weight.shape[1] // 2,) * 2 + (weight.shape[0] // 2,) * 2, F.conv2d
    weight = weight.reshape(1, 1, *weight.shape)
    dims = tuple(range(1, m0.dim()))
    masks, going = [m0], torch.ones(m0.shape[0], dtype=torch.bool, device=mask.device)
    peak = torch.zeros(m0.shape[0], dtype=torch.long, device=mask.device)
    for _ in range(stages // 2):
        current = masks[-1]
        going = going & (current.to(dtype).mean(dim=dims) <= ratio)
        spread = conv(F.pad(current.to(dtype), pad, mode="circular"), weight) >= delta
        grown = spread | m0
        view = (-1,) + (1,) * (m0.dim() - 1)
        masks.append(torch.where(going.reshape(view), grown, current))
        peak = peak + going.long()
    dilations = torch.stack(masks)  # [K + 1, N, 1, (H,) W]
    t = torch.arange(stages + 1, device=mask.device).reshape(-1, 1)
    index = (peak - (t - peak).abs()).clamp(min=0)  # [T + 1, N]
    samples = torch.arange(m0.shape[0], device=mask.device)
    return dilations[index, samples].reshape((stages + 1,) + tuple(shape))


class _ScheduleCache:
    """Schedules by mask content (CPU masks: reading them costs nothing) or by mask tensor (others,
    while the tensor lives and is unchanged), least recently used first out."""

    def __init__(self, size: int):
        self.size = size
        self.by_content: collections.OrderedDict = collections.OrderedDict()
        self.by_tensor: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, mask: torch.Tensor, key: tuple, compute):
        if mask.device.type == "cpu":
            digest = hashlib.blake2b((mask != 0).contiguous().numpy().tobytes(), digest_size=16).digest()
            full = key + (digest,)
            if full in self.by_content:
                self.by_content.move_to_end(full)
                return self.by_content[full]
            value = compute()
            self.by_content[full] = value
            if len(self.by_content) > self.size:
                self.by_content.popitem(last=False)
            return value
        entry = self.by_tensor.get(mask)
        if entry is not None and entry[0] == (key, mask._version):
            return entry[1]
        value = compute()
        self.by_tensor[mask] = ((key, mask._version), value)
        return value

    def clear(self) -> None:
        self.by_content.clear()
        self.by_tensor.clear()


_SCHEDULES = _ScheduleCache(CACHE_SIZE)


# ---------------------------------------------------------------------------------------------------
# The data-consistency step: validation and dispatch


def dcm_data_consistency(
    x: torch.Tensor,
    z: torch.Tensor,
    g: torch.Tensor,
    r: torch.Tensor,
    mask: torch.Tensor,
    dilated_mask: torch.Tensor,
    step: float | torch.Tensor,
    alpha: float | torch.Tensor,
    lam: float | torch.Tensor,
) -> torch.Tensor:
    """One IMA stage's X update (eqs. 15, 18, 19; see the module docstring).

    Args:
        x: X^t, real [B, C, H, W] (float32 or float64; float16 / bfloat16 are computed in float32).
        z: Z, the embedding of the measurement, like x; K⁰ = M⁰ F z.
        g: G^t, like x.
        r: C_R1(X^t), the prior network's output, like x.
        mask: M⁰, bool or 0/1, centred: [W] or [B, W] (columns), [H, W] or [B, 1, H, W].
        dilated_mask: Mᵗ, the stage's DCM mask (`dcm_schedule`), same forms (M⁰ itself without DCM).
        step, alpha, lam: μ, α, λ₁, numbers or one-element real tensors (learnable).

    Returns:
        X^{t+1}, real [B, C, H, W] of the inputs' promoted dtype (float32 for half precision).

    Gradients flow to x, z, g, r, step, alpha and lam through one fused backward.
    """
    x, z, g, r, mask, dilated_mask, coefficients = _validate(x, z, g, r, mask, dilated_mask, step, alpha, lam)
    backend = _dcm.select(x.device)
    if backend == "reference":
        return reference.dcm_data_consistency(x, z, g, r, mask.unsqueeze(1), dilated_mask.unsqueeze(1), *coefficients)
    mask0, mask_u = _half_weights(mask, x.dtype), _half_weights(mask | dilated_mask, x.dtype)
    coef = torch.cat([c.reshape(1) for c in coefficients])
    return _dcm(x, z, g, r, coef, mask0, mask_u, backend=backend)


def _validate(x, z, g, r, mask, dilated_mask, step, alpha, lam):
    """Checks the arguments; returns x, z, g, r in one real dtype, both masks bool [Bm, Hm, W] of one
    shape, and (μ, α, λ) as one-element tensors of that dtype."""
    images = {"x": x, "z": z, "g": g, "r": r}
    # the FFTs compute half precision in float32
    dtype = torch.promote_types(promoted_float_dtype(images), torch.float32)
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    for name, t in images.items():
        if t.shape != x.shape:
            raise ValueError(f"{name} must have x's shape {tuple(x.shape)}, got {tuple(t.shape)}")
    B, _, H, W = x.shape
    masks = []
    for name, m in (("mask", mask), ("dilated_mask", dilated_mask)):
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(m).__name__}")
        if m.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {m.device}")
        masks.append(canonical_mask(m, B, H, W, name))
    # One shape for both: a column mask beside a 2-D one is a 2-D mask, one mask beside per-sample ones too.
    Bm = max(m.shape[0] for m in masks)
    Hm = max(m.shape[1] for m in masks)
    mask, dilated_mask = (m.expand(Bm, Hm, W) for m in masks)
    coefficients = []
    for name, c in (("step", step), ("alpha", alpha), ("lam", lam)):
        if isinstance(c, numbers.Real) and not isinstance(c, bool):
            c = torch.tensor([float(c)], dtype=dtype, device=x.device)
        elif isinstance(c, torch.Tensor):
            if not c.is_floating_point():
                raise TypeError(f"{name} must be a real floating tensor, got dtype {c.dtype}")
            if c.numel() != 1:
                raise ValueError(f"{name} must hold one value, got shape {tuple(c.shape)}")
            if c.device != x.device:
                raise ValueError(f"{name} must be on x's device {x.device}, got {c.device}")
            c = c.to(dtype).reshape(1)
        else:
            raise TypeError(f"{name} must be a number or a torch.Tensor, got {type(c).__name__}")
        coefficients.append(c)
    return (*(t.to(dtype) for t in images.values()), mask, dilated_mask, coefficients)


def _half_weights(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """m̄ of a centred bool mask [Bm, Hm, W] on the half spectrum of the uncentred rfft: [Bm, Hm, W // 2 + 1]
    of `dtype`, (M(k) + M(−k)) / 2 (along W only for column masks, Hm = 1)."""
    dims = (-1,) if mask.shape[1] == 1 else (-2, -1)
    m = torch.fft.ifftshift(mask.to(dtype), dim=dims)
    mirrored = torch.roll(torch.flip(m, dims=dims), shifts=(1,) * len(dims), dims=dims)  # M(−k): index −k mod N
    return ((m + mirrored) * 0.5)[..., : mask.shape[-1] // 2 + 1].contiguous()


# ---------------------------------------------------------------------------------------------------
# Fused implementation

_dcm = FusedOp("dcm_data_consistency", kernels=("dcm_prologue", "dcm_blend", "dcm_epilogue", "dcm_split", "dcm_backward"),
               triton_module="dcm")


def _transforms(mask: torch.Tensor, H: int, W: int):
    """(rfft, irfft) of the blend space: along W for column masks ([.., 1, Wh] weights), 2-D otherwise."""
    if mask.shape[1] == 1:
        return lambda t: torch.fft.rfft(t, dim=-1), lambda t: torch.fft.irfft(t, n=W, dim=-1)
    return lambda t: torch.fft.rfft2(t), lambda t: torch.fft.irfft2(t, s=(H, W))


@_dcm.forward
def _(k, x: torch.Tensor, z: torch.Tensor, g: torch.Tensor, r: torch.Tensor, coef: torch.Tensor, mask0: torch.Tensor,
      mask_u: torch.Tensor) -> torch.Tensor:
    x, z, g, r = (t.contiguous() for t in (x, z, g, r))
    if x.numel() == 0:  # MKL refuses an empty batch of transforms
        return torch.empty_like(x)
    forward, inverse = _transforms(mask0, x.shape[-2], x.shape[-1])
    spectra = forward(k.dcm_prologue(x, z, g, r, coef)).contiguous()  # [2, B, C, H, Wh]: of z − x and d
    return k.dcm_epilogue(inverse(k.dcm_blend(spectra, mask0, mask_u, coef)).contiguous(), x, g, r, coef)


@_dcm.fake
def _(x, z, g, r, coef, mask0, mask_u):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_dcm.backward(saves=("x", "g", "r", "coef", "mask0", "mask_u"), grads=("x", "z", "g", "r", "coef"), need_flags=False)
def _(k, grad: torch.Tensor, x: torch.Tensor, g: torch.Tensor, r: torch.Tensor, coef: torch.Tensor, mask0: torch.Tensor,
      mask_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_z, grad_g, grad_r, grad_coef)."""
    grad, x, g, r = (t.contiguous() for t in (grad, x, g, r))
    if x.numel() == 0:
        return tuple(torch.empty_like(x) for _ in range(4)) + (torch.zeros_like(coef),)
    forward, inverse = _transforms(mask0, x.shape[-2], x.shape[-1])
    projections = inverse(k.dcm_split(forward(grad).contiguous(), mask0, mask_u)).contiguous()  # P₀ grad, P_U grad
    grad_x, grad_z, grad_g, grad_r, coef_rows = k.dcm_backward(grad, projections, x, g, r, coef)
    return grad_x, grad_z, grad_g, grad_r, coef_rows.sum(0)


@_dcm.backward_fake
def _(grad, x, g, r, coef, mask0, mask_u):
    return tuple(torch.empty_like(x, memory_format=torch.contiguous_format) for _ in range(4)) + (torch.empty_like(coef),)
