"""FSMNet's frequency branch (FreBlock): the pointwise work around its FFTs.

FreBlock computes x → conv1×1 → F = rfft2(·, norm="backward") (uncentred: the network's own
convention, not fastMRI's) → (|F|, angle F) → each refined by conv3×3 → LeakyReLU → conv3×3 with a
residual → recombination → irfft2(s=(H, W)) → |·| → conv1×1 → + x → nan_to_num. The FFTs stay in
torch.fft (cuFFT / MKL); these three ops are the rest of its hot path:

* `spectrum_to_polar`: (amplitude, phase) = (|z|, atan2(Im z, Re z)), one pass forward and backward;
  given the signal width, the self-conjugate bins of the half spectrum count as real.
* `polar_to_spectrum`: z = a·cos p + 2·eps + i·(a·sin p + eps), with the residual adds of the
  amplitude and phase refinements (a = amplitude + amplitude_residual, p = phase + phase_residual)
  fused into the same pass.
* `frequency_epilogue`: out = nan_to_num(conv1×1(|y|) + bias + residual); the 1×1 convolution is a
  GEMM (cuBLAS / MKL on the cpu and cuda backends, tl.dot in the Triton kernel) with the pointwise
  work fused around it.

The references are `mcmri_fast.reference.spectrum_to_polar`, `polar_to_spectrum` and
`frequency_epilogue`. Every fused backend (cpu, cuda, triton) implements the three ops for every input
they accept.

The kernels: `freq_spectrum_to_polar`, `freq_polar_to_spectrum`, `freq_epilogue` and their `_backward`s,
whose contract is csrc/frequency.h (the C++ ops of csrc/cpu/frequency.cpp and csrc/cuda/frequency.cu, and
their Triton twins in mcmri_fast.kernels.frequency).
"""
import numbers

import torch

from .. import reference
from ._checks import FLOAT_DTYPES
from ._fused import FusedOp

__all__ = ["frequency_epilogue", "polar_to_spectrum", "spectrum_to_polar"]


def spectrum_to_polar(spectrum: torch.Tensor, *, signal_width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(amplitude, phase) = (|z|, atan2(Im z, Re z)) of a complex tensor, elementwise.

    Args:
        spectrum: complex64 or complex128, any shape (FSMNet: the half spectrum [B, C, H, W//2 + 1] of
            `torch.fft.rfft2(x, norm="backward")`, uncentred), any strides.
        signal_width: W, when the last two dims are the half spectrum [H, W//2 + 1] of rfft2 of a real
            H × W signal. Its self-conjugate bins (rows 0 and H/2, columns 0 and W/2, the halves for even
            sizes only) are real in exact arithmetic; their imaginary part, rounding noise, then counts as
            +0, so their phase is 0 or π by the sign of the real part instead of ±π by the sign of the
            noise (which makes a network's output depend on rounding, e.g. on the thread count).

    Returns:
        (amplitude, phase), real tensors of the spectrum's shape and precision (float32 / float64);
        phase in (−π, π].

    Gradients follow torch.abs and torch.angle: grad_z = (z/|z|)·(g_a + i·g_p/|z|), 0 where z == 0;
    the imaginary parts taken as 0 get none.
    """
    if not isinstance(spectrum, torch.Tensor):
        raise TypeError(f"spectrum must be a torch.Tensor, got {type(spectrum).__name__}")
    if spectrum.dtype not in (torch.complex64, torch.complex128):
        raise TypeError(f"spectrum must be complex64 or complex128, got dtype {spectrum.dtype}")
    if signal_width is not None:
        if not isinstance(signal_width, numbers.Integral) or isinstance(signal_width, bool) or signal_width < 1:
            raise TypeError(f"signal_width must be a positive int or None, got {signal_width!r}")
        if spectrum.dim() < 2 or spectrum.shape[-1] != signal_width // 2 + 1:
            raise ValueError(
                f"spectrum must be [..., H, signal_width // 2 + 1] = [..., H, {signal_width // 2 + 1}] "
                f"(the rfft2 of a real signal of width {signal_width}), got shape {tuple(spectrum.shape)}"
            )
        signal_width = int(signal_width)
    backend = _spectrum_to_polar.select(spectrum.device)
    if backend == "reference":
        return reference.spectrum_to_polar(spectrum, signal_width)
    return tuple(_spectrum_to_polar(spectrum, signal_width, backend=backend))


def polar_to_spectrum(
    amplitude: torch.Tensor,
    phase: torch.Tensor,
    amplitude_residual: torch.Tensor | None = None,
    phase_residual: torch.Tensor | None = None,
    *,
    eps: float = reference.frequency.SPECTRUM_EPS,
) -> torch.Tensor:
    """z = a·cos(p) + 2·eps + i·(a·sin(p) + eps), a = amplitude (+ amplitude_residual),
    p = phase (+ phase_residual): FSMNet's recombination of a refined amplitude and phase.

    Args:
        amplitude, phase: real tensors of one shape (FSMNet: [B, C, H, W//2 + 1]).
        amplitude_residual, phase_residual: optional real tensors of that shape, added to amplitude
            and phase inside the kernel (the residuals of FSMNet's refinements).
        eps: FSMNet's guard: eps on both parts, then eps again on the complex number (real part).

    float16, bfloat16, float32 and float64 inputs are accepted, mixed (under autocast the convolutions
    give half precision while the residuals are float32); the computation runs in float32, or in
    float64 if any input is float64. Half-precision inputs are converted first (a pass each); the
    fused kernels read float32 / float64.

    Returns:
        complex64 (complex128 if any input is float64) of the inputs' shape, to be inverted by
        `torch.fft.irfft2(z, s=(H, W))`. Gradients reach every input (each in its own dtype); a residual
        gets the gradient of the input it is added to.
    """
    tensors = {"amplitude": amplitude, "phase": phase}
    for name, t in (("amplitude_residual", amplitude_residual), ("phase_residual", phase_residual)):
        if t is not None:
            tensors[name] = t
    dtype = _compute_dtype(tensors, like="amplitude")
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    amplitude, phase, amplitude_residual, phase_residual = (
        None if t is None else t.to(dtype) for t in (amplitude, phase, amplitude_residual, phase_residual)
    )
    backend = _polar_to_spectrum.select(amplitude.device)
    if backend == "reference":
        return reference.polar_to_spectrum(amplitude, phase, amplitude_residual, phase_residual, float(eps))
    return _polar_to_spectrum(amplitude, phase, amplitude_residual, phase_residual, float(eps), backend=backend)


def frequency_epilogue(
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    *,
    nonfinite: float = reference.frequency.NONFINITE_VALUE,
) -> torch.Tensor:
    """out = nan_to_num(conv1×1(|y|; weight, bias) + residual, nan=posinf=neginf=nonfinite).

    FreBlock's end: y is the inverse FFT `irfft2(z, s=(H, W))`, the residual the block's input.

    Args:
        y: [B, C, H, W] real (float32 or float64; half precision is promoted).
        weight: [Co, C, 1, 1] (a Conv2d's weight) or [Co, C].
        bias: [Co] or None.
        residual: [B, Co, H, W] real (float16 / bfloat16 accepted).

    Returns:
        [B, Co, H, W] in the promoted dtype of the inputs, at least float32.

    Gradients to y, weight, bias and residual: with g' = g·isfinite(pre-cleanup value) (torch's
    nan_to_num backward), grad_residual = g', grad_bias = Σ g', grad_weight = Σ g'·|y|ᵀ and
    grad_y = sign(y)·(Wᵀ g') (0 at y == 0).
    """
    tensors = {"y": y, "weight": weight, "residual": residual}
    if bias is not None:
        tensors["bias"] = bias
    dtype = _compute_dtype(tensors, like="y", same_shape=False)
    if y.dim() != 4:
        raise ValueError(f"y must be [B, C, H, W], got shape {tuple(y.shape)}")
    B, C, H, W = y.shape
    if not (weight.dim() == 2 or (weight.dim() == 4 and weight.shape[2:] == (1, 1))) or weight.shape[1] != C:
        raise ValueError(f"weight must be [Co, C, 1, 1] or [Co, C] with C = {C}, got shape {tuple(weight.shape)}")
    Co = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (Co,):
        raise ValueError(f"bias must be [Co] = [{Co}] or None, got shape {tuple(bias.shape)}")
    if tuple(residual.shape) != (B, Co, H, W):
        raise ValueError(f"residual must be [B, Co, H, W] = [{B}, {Co}, {H}, {W}], got shape {tuple(residual.shape)}")
    if not isinstance(nonfinite, numbers.Real) or isinstance(nonfinite, bool):
        raise TypeError(f"nonfinite must be a real number, got {type(nonfinite).__name__}")
    y, residual = y.to(dtype), residual.to(dtype)
    weight = weight.to(dtype).reshape(Co, C)
    bias = None if bias is None else bias.to(dtype)
    backend = _frequency_epilogue.select(y.device)
    if backend == "reference":
        return reference.frequency_epilogue(y, weight, bias, residual, float(nonfinite))
    keep_mask = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (y, weight, bias, residual)
    )
    out, _ = _frequency_epilogue(y, weight, bias, residual, float(nonfinite), keep_mask, backend=backend)
    return out


def _compute_dtype(tensors: dict, like: str, same_shape: bool = True) -> torch.dtype:
    """Checks that `tensors` are real floating tensors on the device of tensors[like] (and of its shape
    when same_shape); returns the dtype to compute in: float64 if any is float64, else float32."""
    first = tensors[like]
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be a real float16/bfloat16/float32/float64 tensor, got dtype {t.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name} must be on {like}'s device {first.device}, got {t.device}")
        if same_shape and t.shape != first.shape:
            raise ValueError(f"{name} must have {like}'s shape {tuple(first.shape)}, got {tuple(t.shape)}")
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors.values()) else torch.float32


def _real_dtype(complex_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if complex_dtype == torch.complex128 else torch.float32


def _complex_dtype(real_dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if real_dtype == torch.float64 else torch.complex64


# spectrum_to_polar ----------------------------------------------------------------------------------

_spectrum_to_polar = FusedOp(
    "spectrum_to_polar", kernels=("freq_spectrum_to_polar", "freq_spectrum_to_polar_backward"), triton_module="frequency"
)


@_spectrum_to_polar.forward
def _(k, spectrum: torch.Tensor, signal_width: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    amplitude, phase = k.freq_spectrum_to_polar(spectrum, signal_width)
    return amplitude, phase


@_spectrum_to_polar.fake
def _(spectrum, signal_width):
    real = spectrum.new_empty(spectrum.shape, dtype=_real_dtype(spectrum.dtype))
    return real, torch.empty_like(real)


def _spectrum_to_polar_setup_context(ctx, inputs, output):
    spectrum, signal_width, backend = inputs
    # Only z: |z| is recomputed in the backward (a square root is cheaper than storing and reading it).
    ctx.save_for_backward(spectrum)
    ctx.signal_width, ctx.backend = signal_width, backend
    ctx.set_materialize_grads(False)  # an unused amplitude or phase sends no zero-filled gradient


def _spectrum_to_polar_autograd(ctx, grad_amplitude, grad_phase):
    if grad_amplitude is None and grad_phase is None:
        return None, None, None
    (spectrum,) = ctx.saved_tensors
    grad_spectrum = _spectrum_to_polar.backward_op(spectrum, grad_amplitude, grad_phase, ctx.signal_width, ctx.backend)
    return grad_spectrum, None, None


@_spectrum_to_polar.backward(setup_context=_spectrum_to_polar_setup_context, autograd=_spectrum_to_polar_autograd)
def _(k, spectrum: torch.Tensor, grad_amplitude: torch.Tensor | None, grad_phase: torch.Tensor | None,
      signal_width: int | None) -> torch.Tensor:
    """grad_z = (z/|z|)(g_a + i g_p/|z|), 0 at z == 0; an absent gradient counts as zero; with
    signal_width, z counts as (Re z, +0) at the self-conjugate bins and Im grad_z is 0 there."""
    return k.freq_spectrum_to_polar_backward(spectrum, grad_amplitude, grad_phase, signal_width)


@_spectrum_to_polar.backward_fake
def _(spectrum, grad_amplitude, grad_phase, signal_width):
    return spectrum.new_empty(spectrum.shape)


# polar_to_spectrum ----------------------------------------------------------------------------------

_polar_to_spectrum = FusedOp(
    "polar_to_spectrum", kernels=("freq_polar_to_spectrum", "freq_polar_to_spectrum_backward"), triton_module="frequency"
)


@_polar_to_spectrum.forward
def _(k, amplitude: torch.Tensor, phase: torch.Tensor, amplitude_residual: torch.Tensor | None,
      phase_residual: torch.Tensor | None, eps: float) -> torch.Tensor:
    return k.freq_polar_to_spectrum(amplitude, phase, amplitude_residual, phase_residual, eps)


@_polar_to_spectrum.fake
def _(amplitude, phase, amplitude_residual, phase_residual, eps):
    return amplitude.new_empty(amplitude.shape, dtype=_complex_dtype(amplitude.dtype))


def _polar_to_spectrum_autograd(ctx, grad):
    # A residual gets the gradient of the input it is added to.
    grad_amplitude, grad_phase = _polar_to_spectrum.backward_op(grad, *ctx.saved_tensors, ctx.backend)
    need = ctx.needs_input_grad
    return (
        grad_amplitude if need[0] else None,
        grad_phase if need[1] else None,
        grad_amplitude if need[2] else None,
        grad_phase if need[3] else None,
        None,
        None,
    )


# The inputs themselves (no new buffers): the backward recomputes a and p from them in its pass.
@_polar_to_spectrum.backward(saves=("amplitude", "phase", "amplitude_residual", "phase_residual"),
                             autograd=_polar_to_spectrum_autograd)
def _(k, grad: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor, amplitude_residual: torch.Tensor | None,
      phase_residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_a, grad_p) = (g_re cos p + g_im sin p, a (g_im cos p − g_re sin p)), a and p with their residuals."""
    grad_amplitude, grad_phase = k.freq_polar_to_spectrum_backward(grad, amplitude, phase, amplitude_residual,
                                                                   phase_residual)
    return grad_amplitude, grad_phase


@_polar_to_spectrum.backward_fake
def _(grad, amplitude, phase, amplitude_residual, phase_residual):
    return amplitude.new_empty(amplitude.shape), amplitude.new_empty(amplitude.shape)


# frequency_epilogue ---------------------------------------------------------------------------------

_frequency_epilogue = FusedOp(
    "frequency_epilogue", kernels=("freq_epilogue", "freq_epilogue_backward"), triton_module="frequency"
)


@_frequency_epilogue.forward
def _(k, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor, nonfinite: float,
      keep_mask: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (out, finite): finite is the bool mask [B, Co, H, W] of the finite pre-cleanup values,
    which the backward needs (empty unless keep_mask). A bool per element is a quarter of the float32
    output; recomputing the pre-cleanup value instead would redo the GEMM and read the residual again,
    and the output alone cannot tell a replaced value from a computed one equal to `nonfinite`."""
    out, finite = k.freq_epilogue(y, weight, bias, residual, nonfinite, keep_mask)
    return out, finite


@_frequency_epilogue.fake
def _(y, weight, bias, residual, nonfinite, keep_mask):
    out = residual.new_empty(residual.shape)
    finite = residual.new_empty(residual.shape if keep_mask else (0,), dtype=torch.bool)
    return out, finite


def _frequency_epilogue_setup_context(ctx, inputs, output):
    y, weight, bias, _, _, keep_mask, backend = inputs
    _, finite = output
    ctx.mark_non_differentiable(finite)
    # y (for |y| and sign(y)), the weight (for Wᵀ g') and the finite mask; not the residual, not the output.
    ctx.save_for_backward(y, weight, finite)
    ctx.backend, ctx.kept_mask = backend, keep_mask


def _frequency_epilogue_autograd(ctx, grad, _grad_finite):
    y, weight, finite = ctx.saved_tensors
    need_y, need_weight, need_bias, need_residual = ctx.needs_input_grad[:4]
    if not ctx.kept_mask:
        raise RuntimeError("frequency_epilogue: an input needs a gradient but its forward kept no finite mask")
    grad_y, grad_weight, grad_bias, grad_residual = _frequency_epilogue.backward_op(
        grad, y, weight, finite, need_y, need_weight, need_bias, ctx.backend
    )
    return (
        grad_y if need_y else None,
        grad_weight if need_weight else None,
        grad_bias if need_bias else None,
        grad_residual if need_residual else None,
        None,
        None,
        None,
    )


@_frequency_epilogue.backward(setup_context=_frequency_epilogue_setup_context, autograd=_frequency_epilogue_autograd)
def _(k, grad: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, finite: torch.Tensor, need_y_grad: bool,
      need_weight_grad: bool, need_bias_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (grad_y, grad_weight [Co, C], grad_bias [Co], grad_residual); the first three are empty
    unless asked for."""
    grad_y, grad_weight, grad_bias, grad_residual = k.freq_epilogue_backward(
        grad, y, weight, finite, need_y_grad, need_weight_grad, need_bias_grad
    )
    return grad_y, grad_weight, grad_bias, grad_residual


@_frequency_epilogue.backward_fake
def _(grad, y, weight, finite, need_y_grad, need_weight_grad, need_bias_grad):
    return (
        y.new_empty(y.shape) if need_y_grad else y.new_empty(0),
        weight.new_empty(weight.shape) if need_weight_grad else y.new_empty(0),
        weight.new_empty(weight.shape[:1]) if need_bias_grad else y.new_empty(0),
        grad.new_empty(grad.shape),
    )
