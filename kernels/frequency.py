"""Triton kernels of the frequency-branch ops, the twins of the C++ ops torch.ops.mcmri_fast.freq_* (their
contract is csrc/frequency.h; the ops, mcmri_fast/ops/frequency.py, have checked the arguments). The
launchers below take the names of the C++ ops.

* freq_spectrum_to_polar: (|z|, atan2(Im z, Re z)) over a flat complex buffer; backward
  grad_z = (z/|z|)(g_a + i g_p/|z|), 0 at z == 0. Given the signal width, Im z counts as +0 at the
  self-conjugate bins of the rfft2 half spectrum, and gets no gradient there.
* freq_polar_to_spectrum: z = a cos p + 2 eps + i (a sin p + eps) with the residual adds fused; backward
  (grad_a, grad_p) = (g_re cos p + g_im sin p, a (g_im cos p − g_re sin p)).
* freq_epilogue: out = nan_to_num(W |y| + bias + residual) in one kernel: a program owns a
  [BLOCK_CO, BLOCK_N] output tile of one sample and reduces over C with tl.dot (IEEE precision, so
  float32 stays float32: the reference's convolution is compared at float32 tolerance), or with a
  broadcast multiply-and-sum when a dimension is below tl.dot's minimum of 16. Its backward kernel
  writes g' = g·finite (grad_residual), grad_y = sign(y)·(Wᵀ g') and per-tile partial sums of the
  bias gradient; the weight gradient Σ g' |y|ᵀ is one batched GEMM (cuBLAS) in the launcher.

Complex tensors are passed as torch.view_as_real views, loaded as [BLOCK, 2] tiles and tl.split into
real and imaginary parts. Every load and store is masked. No libdevice calls (the interpreter has
none): atan2 is written from tl ops below; tl.sin, tl.cos and tl.sqrt work in the interpreter and on
the GPU. Offsets are int64 where a product may exceed 2**31.
"""
import torch
import triton
import triton.language as tl

_BLOCK = 1024
_NUM_WARPS = 4
# Epilogue tiles: output pixels per program, and the channel blocks of the reduction and of the output.
_EPILOGUE_BLOCK_N = 64
_MAX_BLOCK_CHANNELS = 64
_DOT_MIN = 16

@triton.jit
def _atan_unit(t):
    """atan(t) for t in [0, 1], Cephes' atan: x + x·z·P(z)/Q(z) with z = x², x = t on [0, 0.66] and
    x = (t − 1)/(t + 1) above, adding π/4 (in two parts); accurate to double precision, so one formula
    serves float32 and float64."""
    reduce = t > 0.66
    x = tl.where(reduce, (t - 1.0) / (t + 1.0), t)
    z = x * x
    p = (((-8.750608600031904122785e-1 * z - 1.615753718733365076637e1) * z - 7.500855792314704667340e1) * z
         - 1.228866684490136173410e2) * z - 6.485021904942025371773e1
    q = ((((z + 2.485846490142306297962e1) * z + 1.650270098316988542046e2) * z + 4.328810604912902668951e2) * z
         + 4.853903996359136964868e2) * z + 1.945506571482613964425e2
    r = x + x * (z * p / q)
    return tl.where(reduce, r + (0.7853981633974483 + 3.061616997868382943065e-17), r)


@triton.jit
def _sign_bit(v, IS_FP64: tl.constexpr):
    """True where v's sign bit is set (−0.0 included), as the quadrant rules of atan2 need."""
    if IS_FP64:
        return v.to(tl.int64, bitcast=True) < 0
    else:
        return v.to(tl.int32, bitcast=True) < 0


@triton.jit
def _atan2(y, x, IS_FP64: tl.constexpr):
    """atan2(y, x) with C's conventions for signed zeros (atan2(±0, −0) = ±π), from tl ops only."""
    ax = tl.abs(x)
    ay = tl.abs(y)
    big = tl.maximum(ax, ay)
    small = tl.minimum(ax, ay)
    t = tl.where(big == 0, 0.0, small / tl.where(big == 0, 1.0, big))
    r = _atan_unit(t)
    r = tl.where(ay > ax, 1.5707963267948966 - r, r)
    r = tl.where(_sign_bit(x, IS_FP64), 3.141592653589793 - r, r)
    return tl.where(_sign_bit(y, IS_FP64), -r, r)


@triton.jit
def _complex_offsets(offs):
    """[BLOCK, 2] offsets of the (re, im) pairs of complex elements `offs` in a view_as_real buffer."""
    return offs.to(tl.int64)[:, None] * 2 + tl.arange(0, 2)[None, :]


@triton.jit
def _self_conjugate(offs, rows, cols, nyquist_row, nyquist_col):
    """Whether flat elements offs of a contiguous [..., rows, cols] half spectrum are self-conjugate bins
    (csrc/frequency_bins.h; nyquist_row / nyquist_col are −1 where there is none)."""
    col = offs % cols
    row = (offs // cols) % rows
    return ((row == 0) | (row == nyquist_row)) & ((col == 0) | (col == nyquist_col))


@triton.jit
def _spectrum_to_polar_fwd_kernel(z_ptr, amplitude_ptr, phase_ptr, n, rows, cols, nyquist_row, nyquist_col,
                                  REAL_SIGNAL: tl.constexpr, IS_FP64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    re, im = tl.split(tl.load(z_ptr + _complex_offsets(offs), mask=inside[:, None], other=0.0))
    if REAL_SIGNAL:
        im = tl.where(_self_conjugate(offs, rows, cols, nyquist_row, nyquist_col), 0.0, im)
    tl.store(amplitude_ptr + offs, tl.sqrt(re * re + im * im), mask=inside)
    tl.store(phase_ptr + offs, _atan2(im, re, IS_FP64), mask=inside)


@triton.jit
def _spectrum_to_polar_bwd_kernel(z_ptr, grad_amplitude_ptr, grad_phase_ptr, grad_z_ptr, n,
                                  rows, cols, nyquist_row, nyquist_col, REAL_SIGNAL: tl.constexpr,
                                  HAS_GRAD_AMPLITUDE: tl.constexpr, HAS_GRAD_PHASE: tl.constexpr,
                                  BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    z_offs = _complex_offsets(offs)
    re, im = tl.split(tl.load(z_ptr + z_offs, mask=inside[:, None], other=0.0))
    if REAL_SIGNAL:
        at_bin = _self_conjugate(offs, rows, cols, nyquist_row, nyquist_col)
        im = tl.where(at_bin, 0.0, im)
    r2 = re * re + im * im
    at_zero = r2 == 0
    safe_r2 = tl.where(at_zero, 1.0, r2)
    s = tl.zeros_like(re)
    t = tl.zeros_like(re)
    if HAS_GRAD_AMPLITUDE:
        s = tl.load(grad_amplitude_ptr + offs, mask=inside, other=0.0) / tl.sqrt(safe_r2)
    if HAS_GRAD_PHASE:
        t = tl.load(grad_phase_ptr + offs, mask=inside, other=0.0) / safe_r2
    g_re = tl.where(at_zero, 0.0, s * re - t * im)
    g_im = tl.where(at_zero, 0.0, s * im + t * re)
    if REAL_SIGNAL:
        g_im = tl.where(at_bin, 0.0, g_im)  # the discarded imaginary part gets no gradient
    tl.store(grad_z_ptr + z_offs, tl.join(g_re, g_im), mask=inside[:, None])


@triton.jit
def _polar_operands(amplitude_ptr, phase_ptr, amplitude_residual_ptr, phase_residual_ptr, offs, inside,
                    HAS_AMPLITUDE_RESIDUAL: tl.constexpr, HAS_PHASE_RESIDUAL: tl.constexpr):
    """a = amplitude (+ amplitude_residual), p = phase (+ phase_residual) at offs."""
    a = tl.load(amplitude_ptr + offs, mask=inside, other=0.0)
    p = tl.load(phase_ptr + offs, mask=inside, other=0.0)
    if HAS_AMPLITUDE_RESIDUAL:
        a += tl.load(amplitude_residual_ptr + offs, mask=inside, other=0.0)
    if HAS_PHASE_RESIDUAL:
        p += tl.load(phase_residual_ptr + offs, mask=inside, other=0.0)
    return a, p


@triton.jit
def _polar_to_spectrum_fwd_kernel(amplitude_ptr, phase_ptr, amplitude_residual_ptr, phase_residual_ptr, z_ptr, n,
                                  eps, HAS_AMPLITUDE_RESIDUAL: tl.constexpr, HAS_PHASE_RESIDUAL: tl.constexpr,
                                  BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    a, p = _polar_operands(amplitude_ptr, phase_ptr, amplitude_residual_ptr, phase_residual_ptr, offs, inside,
                           HAS_AMPLITUDE_RESIDUAL, HAS_PHASE_RESIDUAL)
    # eps twice on the real part, as the reference adds it (so both round alike).
    re = (a * tl.cos(p) + eps) + eps
    im = a * tl.sin(p) + eps
    tl.store(z_ptr + _complex_offsets(offs), tl.join(re, im), mask=inside[:, None])


@triton.jit
def _polar_to_spectrum_bwd_kernel(grad_ptr, amplitude_ptr, phase_ptr, amplitude_residual_ptr, phase_residual_ptr,
                                  grad_amplitude_ptr, grad_phase_ptr, n, HAS_AMPLITUDE_RESIDUAL: tl.constexpr,
                                  HAS_PHASE_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    a, p = _polar_operands(amplitude_ptr, phase_ptr, amplitude_residual_ptr, phase_residual_ptr, offs, inside,
                           HAS_AMPLITUDE_RESIDUAL, HAS_PHASE_RESIDUAL)
    g_re, g_im = tl.split(tl.load(grad_ptr + _complex_offsets(offs), mask=inside[:, None], other=0.0))
    c = tl.cos(p)
    s = tl.sin(p)
    tl.store(grad_amplitude_ptr + offs, g_re * c + g_im * s, mask=inside)
    tl.store(grad_phase_ptr + offs, a * (g_im * c - g_re * s), mask=inside)


@triton.jit
def _channel_product(w, x, USE_DOT: tl.constexpr):
    """w [M, K] @ x [K, N]: tl.dot in IEEE precision, or a broadcast multiply-and-sum below its minimum sizes."""
    if USE_DOT:
        return tl.dot(w, x, input_precision="ieee")
    else:
        return tl.sum(w[:, :, None] * x[None, :, :], axis=1)


@triton.jit
def _frequency_epilogue_fwd_kernel(
    y_ptr, weight_ptr, bias_ptr, residual_ptr, out_ptr, finite_ptr, C, Co, N, nonfinite, inf,
    HAS_BIAS: tl.constexpr, KEEP_MASK: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_CO: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_co = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    n_in = n < N
    co_in = co < Co
    acc = tl.zeros((BLOCK_CO, BLOCK_N), dtype=y_ptr.dtype.element_ty)
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        c_in = c < C
        abs_y = tl.abs(tl.load(y_ptr + (b * C + c)[:, None] * N + n[None, :], mask=c_in[:, None] & n_in[None, :],
                               other=0.0))
        w = tl.load(weight_ptr + co[:, None] * C + c[None, :], mask=co_in[:, None] & c_in[None, :], other=0.0)
        acc += _channel_product(w, abs_y, USE_DOT)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + co, mask=co_in, other=0.0)[:, None]
    out_offs = (b * Co + co)[:, None] * N + n[None, :]
    inside = co_in[:, None] & n_in[None, :]
    v = acc + tl.load(residual_ptr + out_offs, mask=inside, other=0.0)
    finite = tl.abs(v) < inf  # false for ±inf and nan
    tl.store(out_ptr + out_offs, tl.where(finite, v, nonfinite), mask=inside)
    if KEEP_MASK:
        tl.store(finite_ptr + out_offs, finite.to(tl.int8), mask=inside)


@triton.jit
def _frequency_epilogue_bwd_kernel(
    grad_ptr, y_ptr, weight_ptr, finite_ptr, grad_y_ptr, grad_residual_ptr, bias_part_ptr, C, Co, N,
    NEED_Y_GRAD: tl.constexpr, USE_DOT: tl.constexpr,
    BLOCK_CO: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Program (n tile, c block, b): grad_y of its [BLOCK_C, BLOCK_N] tile; the programs of c block 0
    # also write g' and the bias partial sums of the tile (one slot per tile: deterministic, no atomics).
    pid_n = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    n_in = n < N
    c_in = c < C
    acc = tl.zeros((BLOCK_C, BLOCK_N), dtype=y_ptr.dtype.element_ty)
    n_tiles = tl.num_programs(0)
    for co0 in range(0, Co, BLOCK_CO):
        co = co0 + tl.arange(0, BLOCK_CO)
        co_in = co < Co
        offs = (b * Co + co)[:, None] * N + n[None, :]
        inside = co_in[:, None] & n_in[None, :]
        g = tl.load(grad_ptr + offs, mask=inside, other=0.0)
        keep = tl.load(finite_ptr + offs, mask=inside, other=0) != 0
        g = tl.where(keep, g, 0.0)
        if pid_c == 0:
            tl.store(grad_residual_ptr + offs, g, mask=inside)
            tl.store(bias_part_ptr + (b * n_tiles + pid_n) * Co + co, tl.sum(g, axis=1), mask=co_in)
        if NEED_Y_GRAD:
            # Wᵀ [BLOCK_C, BLOCK_CO] read through W's [Co, C] strides.
            w_t = tl.load(weight_ptr + co[None, :] * C + c[:, None], mask=c_in[:, None] & co_in[None, :], other=0.0)
            acc += _channel_product(w_t, g, USE_DOT)
    if NEED_Y_GRAD:
        y_offs = (b * C + c)[:, None] * N + n[None, :]
        inside_y = c_in[:, None] & n_in[None, :]
        y = tl.load(y_ptr + y_offs, mask=inside_y, other=0.0)
        sign = tl.where(y > 0, 1.0, 0.0) - tl.where(y < 0, 1.0, 0.0)  # 0 at y == 0 and nan, as torch.sign
        tl.store(grad_y_ptr + y_offs, sign * acc, mask=inside_y)


# ---------------------------------------------------------------------------------------------------
# Launchers (torch.ops.mcmri_fast.freq_*: csrc/frequency.h)


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, _BLOCK),)


def _contiguous(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.contiguous()


def _self_conjugate_bins(spectrum: torch.Tensor, signal_width: int | None) -> dict:
    """The kernels' arguments locating the self-conjugate bins (csrc/frequency_bins.h)."""
    if signal_width is None:
        return dict(rows=1, cols=1, nyquist_row=-1, nyquist_col=-1, REAL_SIGNAL=False)
    height = spectrum.shape[-2]
    return dict(rows=max(height, 1), cols=signal_width // 2 + 1, nyquist_row=height // 2 if height % 2 == 0 else -1,
                nyquist_col=signal_width // 2 if signal_width % 2 == 0 else -1, REAL_SIGNAL=True)


def freq_spectrum_to_polar(spectrum: torch.Tensor, signal_width: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    bins = _self_conjugate_bins(spectrum, signal_width)
    z = torch.view_as_real(spectrum.resolve_conj().contiguous())
    amplitude = torch.empty(spectrum.shape, dtype=z.dtype, device=z.device)
    phase = torch.empty_like(amplitude)
    if amplitude.numel():
        _spectrum_to_polar_fwd_kernel[_grid(amplitude.numel())](
            z, amplitude, phase, amplitude.numel(), **bins, IS_FP64=z.dtype == torch.float64, BLOCK=_BLOCK,
            num_warps=_NUM_WARPS,
        )
    return amplitude, phase


def freq_spectrum_to_polar_backward(spectrum, grad_amplitude, grad_phase, signal_width: int | None) -> torch.Tensor:
    bins = _self_conjugate_bins(spectrum, signal_width)
    spectrum = spectrum.resolve_conj().contiguous()
    grad_amplitude, grad_phase = _contiguous(grad_amplitude), _contiguous(grad_phase)  # stride 0 materialised
    grad_spectrum = torch.empty_like(spectrum)
    n = spectrum.numel()
    if n:
        z = torch.view_as_real(spectrum)
        _spectrum_to_polar_bwd_kernel[_grid(n)](
            z, grad_amplitude if grad_amplitude is not None else z, grad_phase if grad_phase is not None else z,
            torch.view_as_real(grad_spectrum), n, **bins,
            HAS_GRAD_AMPLITUDE=grad_amplitude is not None, HAS_GRAD_PHASE=grad_phase is not None,
            BLOCK=_BLOCK, num_warps=_NUM_WARPS,
        )
    return grad_spectrum


def freq_polar_to_spectrum(amplitude, phase, amplitude_residual, phase_residual, eps: float) -> torch.Tensor:
    amplitude, phase = amplitude.contiguous(), phase.contiguous()
    amplitude_residual, phase_residual = _contiguous(amplitude_residual), _contiguous(phase_residual)
    complex_dtype = torch.complex128 if amplitude.dtype == torch.float64 else torch.complex64
    spectrum = torch.empty(amplitude.shape, dtype=complex_dtype, device=amplitude.device)
    n = amplitude.numel()
    if n:
        _polar_to_spectrum_fwd_kernel[_grid(n)](
            amplitude, phase,
            amplitude_residual if amplitude_residual is not None else amplitude,
            phase_residual if phase_residual is not None else phase,
            torch.view_as_real(spectrum), n, eps,
            HAS_AMPLITUDE_RESIDUAL=amplitude_residual is not None, HAS_PHASE_RESIDUAL=phase_residual is not None,
            BLOCK=_BLOCK, num_warps=_NUM_WARPS,
        )
    return spectrum


def freq_polar_to_spectrum_backward(grad, amplitude, phase, amplitude_residual, phase_residual):
    grad = grad.resolve_conj().contiguous()
    amplitude, phase = amplitude.contiguous(), phase.contiguous()
    amplitude_residual, phase_residual = _contiguous(amplitude_residual), _contiguous(phase_residual)
    grad_amplitude = torch.empty_like(amplitude)
    grad_phase = torch.empty_like(amplitude)
    n = amplitude.numel()
    if n:
        _polar_to_spectrum_bwd_kernel[_grid(n)](
            torch.view_as_real(grad), amplitude, phase,
            amplitude_residual if amplitude_residual is not None else amplitude,
            phase_residual if phase_residual is not None else phase,
            grad_amplitude, grad_phase, n,
            HAS_AMPLITUDE_RESIDUAL=amplitude_residual is not None, HAS_PHASE_RESIDUAL=phase_residual is not None,
            BLOCK=_BLOCK, num_warps=_NUM_WARPS,
        )
    return grad_amplitude, grad_phase


def _channel_blocks(C: int, Co: int) -> tuple[int, int, bool]:
    """(BLOCK_C, BLOCK_CO, use tl.dot): tl.dot needs every dimension of at least 16."""
    block_c = min(triton.next_power_of_2(max(C, 1)), _MAX_BLOCK_CHANNELS)
    block_co = min(triton.next_power_of_2(max(Co, 1)), _MAX_BLOCK_CHANNELS)
    use_dot = C >= _DOT_MIN and Co >= _DOT_MIN
    return max(block_c, _DOT_MIN) if use_dot else block_c, max(block_co, _DOT_MIN) if use_dot else block_co, use_dot


def freq_epilogue(y, weight, bias, residual, nonfinite: float, keep_mask: bool):
    y, weight, residual = y.contiguous(), weight.contiguous(), residual.contiguous()
    bias = _contiguous(bias)
    B, C, H, W = y.shape
    Co, N = weight.shape[0], H * W
    out = torch.empty((B, Co, H, W), dtype=y.dtype, device=y.device)
    finite = torch.empty((B, Co, H, W) if keep_mask else (0,), dtype=torch.bool, device=y.device)
    if out.numel():
        block_c, block_co, use_dot = _channel_blocks(C, Co)
        grid = (triton.cdiv(N, _EPILOGUE_BLOCK_N), triton.cdiv(Co, block_co), B)
        _frequency_epilogue_fwd_kernel[grid](
            y, weight, bias if bias is not None else weight, residual, out,
            finite.view(torch.int8) if keep_mask else out, C, Co, N, nonfinite, float("inf"),
            HAS_BIAS=bias is not None, KEEP_MASK=keep_mask, USE_DOT=use_dot,
            BLOCK_CO=block_co, BLOCK_C=block_c, BLOCK_N=_EPILOGUE_BLOCK_N, num_warps=_NUM_WARPS,
        )
    return out, finite


def freq_epilogue_backward(grad, y, weight, finite, need_y_grad: bool, need_weight_grad: bool, need_bias_grad: bool):
    grad, y, weight, finite = grad.contiguous(), y.contiguous(), weight.contiguous(), finite.contiguous()
    B, C, H, W = y.shape
    Co, N = weight.shape[0], H * W
    block_c, block_co, use_dot = _channel_blocks(C, Co)
    n_tiles = triton.cdiv(N, _EPILOGUE_BLOCK_N)
    grad_residual = torch.empty_like(grad)
    grad_y = torch.empty_like(y) if need_y_grad else y.new_empty(0)
    bias_parts = y.new_empty((B, n_tiles, Co))
    if grad.numel():
        grid = (n_tiles, triton.cdiv(C, block_c) if need_y_grad else 1, B)
        _frequency_epilogue_bwd_kernel[grid](
            grad, y, weight, finite.view(torch.int8), grad_y if need_y_grad else grad, grad_residual, bias_parts,
            C, Co, N, NEED_Y_GRAD=need_y_grad, USE_DOT=use_dot,
            BLOCK_CO=block_co, BLOCK_C=block_c, BLOCK_N=_EPILOGUE_BLOCK_N, num_warps=_NUM_WARPS,
        )
    else:
        bias_parts.zero_()
        grad_y.zero_()
    grad_bias = bias_parts.sum(dim=(0, 1)) if need_bias_grad else y.new_empty(0)
    grad_weight = y.new_empty(0)  # distinct empty tensors: a custom op's outputs may not alias
    if need_weight_grad:
        # Σ_b g'_b |y_b|ᵀ: one batched GEMM on the GPU's BLAS, then a sum over the (few) samples.
        grad_weight = torch.bmm(grad_residual.view(B, Co, N), y.abs().view(B, C, N).transpose(1, 2)).sum(0)
    return grad_y, grad_weight, grad_bias, grad_residual
