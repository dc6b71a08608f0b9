"""Triton kernels of the data-consistency spectral blend, the twins of the C++ ops
torch.ops.mcmri_fast.dc_blend_ and dc_blend_backward_ (their contract is csrc/data_consistency.h; the op,
mcmri_fast/ops/data_consistency.py, has checked the arguments).

Shapes: spec [B, C, H, W] complex64/128, contiguous; src [B, C, H, W] of spec's dtype, any strides
(0 included: a k0 shared over channels is expanded, an FFT output may be H-major); mask uint8
[B, H, W], any strides (a shared mask is expanded); weight real [C], any stride (0 for one scalar
weight); phase_h [H] and phase_w [W] contiguous, of spec's dtype. With si = (i + shift_h) mod H,
sj = (j + shift_w) mod W, phi = phase_h[i] phase_w[j], m = mask[b, si, sj], w = weight[c]:

    forward (in place):  spec[b,c,i,j] <- k + w m (phi src[b,c,si,sj] - k),  k = spec[b,c,i,j]
    backward, g = grad_spec[b,c,i,j] (grad_spec contiguous):
        grad_spec[b,c,i,j] <- (1 - w m) g                                    (in place)
        grad_src[b,c,si,sj] = conj(phi) w m g        (if the caller passes grad_src [B, C, H, W],
                                                      any non-overlapping dense strides; every
                                                      element is written, zeros where m == 0)
        grad_weight_part[b,c,t] = sum over tile t of m Re(conj(g) (phi src[b,c,si,sj] - spec[b,c,i,j]))
                                                     (if spec, contiguous, is given; the caller sums
                                                      dims 0 and 2; one slot per tile, no atomics)

One program owns a BLOCK_H x BLOCK_W tile of one (b, c) plane. Complex tensors are passed as
torch.view_as_real views and loaded as [BLOCK_H, BLOCK_W, 2] tiles, then tl.split into real and
imaginary parts. A complex stride s is the real stride 2 s of the view (its trailing dim has stride
1), so src, mask, weight and grad_src are addressed through the real-element strides the launchers
pass; spec and grad_spec are contiguous (their tiles coalesce). Offsets are int64: a stride times an
index may exceed 2**31.
"""
import torch
import triton
import triton.language as tl

# Complex elements per tile: 8 per thread at num_warps=4 keeps the float64 backward within registers.
_TILE_ELEMENTS = 1024
_MAX_BLOCK_W = 128
_NUM_WARPS = 4


@triton.jit
def _tile(C, H, W, shift_h, shift_w, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """The tile of this program: its index, (b, c), rows i, columns j and their shifted sources."""
    pid = tl.program_id(0)
    n_col_blocks = tl.cdiv(W, BLOCK_W)
    n_row_blocks = tl.cdiv(H, BLOCK_H)
    col_block = pid % n_col_blocks
    row_block = (pid // n_col_blocks) % n_row_blocks
    bc = pid // (n_col_blocks * n_row_blocks)
    b = bc // C
    c = bc - b * C
    i = row_block * BLOCK_H + tl.arange(0, BLOCK_H)
    j = col_block * BLOCK_W + tl.arange(0, BLOCK_W)
    # Shifts lie in [0, H) and [0, W): one conditional subtraction wraps them, no modulo needed.
    si = tl.where(i + shift_h >= H, i + shift_h - H, i + shift_h)
    sj = tl.where(j + shift_w >= W, j + shift_w - W, j + shift_w)
    return pid, bc, b, c, i, j, si, sj


@triton.jit
def _strided_offsets(b, c, si, sj, stride_b, stride_c, stride_h, stride_w):
    """int64 offsets [BLOCK_H, BLOCK_W, 2] of the complex elements (b, c, si, sj) of a strided
    view_as_real tensor (real-element strides; the trailing real/imaginary dim has stride 1)."""
    base = b.to(tl.int64) * stride_b + c.to(tl.int64) * stride_c
    rows = base + si.to(tl.int64) * stride_h
    cols = sj.to(tl.int64) * stride_w
    return rows[:, None, None] + cols[None, :, None] + tl.arange(0, 2)[None, None, :]


@triton.jit
def _cmul(a_re, a_im, b_re, b_im):
    return a_re * b_re - a_im * b_im, a_re * b_im + a_im * b_re


@triton.jit
def _tile_operands(src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, C, H, W, shift_h, shift_w,
                   src_sb, src_sc, src_sh, src_sw, mask_sb, mask_sh, mask_sw, weight_s,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's tile (see _tile), the offsets of its spec and src elements, the mask m (False
    outside the tensor), w and phi."""
    pid, bc, b, c, i, j, si, sj = _tile(C, H, W, shift_h, shift_w, BLOCK_H, BLOCK_W)
    # spec and grad_spec are contiguous [B, C, H, W, 2]; their row offsets may exceed 2**31.
    spec_offs = ((bc.to(tl.int64) * H + i) * W * 2)[:, None, None] + (j * 2)[None, :, None] \
        + tl.arange(0, 2)[None, None, :]
    src_offs = _strided_offsets(b, c, si, sj, src_sb, src_sc, src_sh, src_sw)
    in_bounds = (i < H)[:, None] & (j < W)[None, :]
    mask_offs = (b.to(tl.int64) * mask_sb + si.to(tl.int64) * mask_sh)[:, None] \
        + (sj.to(tl.int64) * mask_sw)[None, :]
    m = tl.load(mask_ptr + mask_offs, mask=in_bounds, other=0) != 0
    w = tl.load(weight_ptr + c.to(tl.int64) * weight_s)
    ph_re = tl.load(ph_ptr + 2 * i, mask=i < H, other=0.0)
    ph_im = tl.load(ph_ptr + 2 * i + 1, mask=i < H, other=0.0)
    pw_re = tl.load(pw_ptr + 2 * j, mask=j < W, other=0.0)
    pw_im = tl.load(pw_ptr + 2 * j + 1, mask=j < W, other=0.0)
    phi_re, phi_im = _cmul(ph_re[:, None], ph_im[:, None], pw_re[None, :], pw_im[None, :])
    return pid, bc, b, c, si, sj, spec_offs, src_offs, in_bounds, m, w, phi_re, phi_im


@triton.jit
def _data_consistency_fwd_kernel(
    spec_ptr, src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr,
    C, H, W, shift_h, shift_w,
    src_sb, src_sc, src_sh, src_sw, mask_sb, mask_sh, mask_sw, weight_s,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid, bc, b, c, si, sj, spec_offs, src_offs, in_bounds, m, w, phi_re, phi_im = _tile_operands(
        src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, C, H, W, shift_h, shift_w,
        src_sb, src_sc, src_sh, src_sw, mask_sb, mask_sh, mask_sw, weight_s, BLOCK_H, BLOCK_W)
    # Unsampled positions (m == 0) keep their value: they are neither read nor written.
    m3 = m[:, :, None]
    k_re, k_im = tl.split(tl.load(spec_ptr + spec_offs, mask=m3, other=0.0))
    s_re, s_im = tl.split(tl.load(src_ptr + src_offs, mask=m3, other=0.0))
    p_re, p_im = _cmul(phi_re, phi_im, s_re, s_im)
    out_re = k_re + w * (p_re - k_re)
    out_im = k_im + w * (p_im - k_im)
    tl.store(spec_ptr + spec_offs, tl.join(out_re, out_im), mask=m3)


@triton.jit
def _data_consistency_bwd_kernel(
    grad_ptr, src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, spec_ptr, grad_src_ptr, grad_weight_ptr,
    C, H, W, shift_h, shift_w,
    src_sb, src_sc, src_sh, src_sw, mask_sb, mask_sh, mask_sw, weight_s,
    gsrc_sb, gsrc_sc, gsrc_sh, gsrc_sw,
    HAS_SPEC: tl.constexpr, NEED_SRC_GRAD: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid, bc, b, c, si, sj, spec_offs, src_offs, in_bounds, m, w, phi_re, phi_im = _tile_operands(
        src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, C, H, W, shift_h, shift_w,
        src_sb, src_sc, src_sh, src_sw, mask_sb, mask_sh, mask_sw, weight_s, BLOCK_H, BLOCK_W)
    m3 = m[:, :, None]
    # Every output depends on g only where m == 1, so g is read there only.
    g_re, g_im = tl.split(tl.load(grad_ptr + spec_offs, mask=m3, other=0.0))
    if NEED_SRC_GRAD:
        # grad_src [B, C, H, W] (the caller's strides): the tile scatters to its source rows si and
        # columns sj, and writes zeros where m == 0. (i, j) -> (si, sj) is a bijection of the plane,
        # so every element of grad_src is written exactly once.
        wg_re = tl.where(m, w * g_re, 0.0)
        wg_im = tl.where(m, w * g_im, 0.0)
        gs_re, gs_im = _cmul(phi_re, -phi_im, wg_re, wg_im)  # conj(phi) w g
        gs_offs = _strided_offsets(b, c, si, sj, gsrc_sb, gsrc_sc, gsrc_sh, gsrc_sw)
        tl.store(grad_src_ptr + gs_offs, tl.join(gs_re, gs_im), mask=in_bounds[:, :, None])
    if HAS_SPEC:
        k_re, k_im = tl.split(tl.load(spec_ptr + spec_offs, mask=m3, other=0.0))
        s_re, s_im = tl.split(tl.load(src_ptr + src_offs, mask=m3, other=0.0))
        p_re, p_im = _cmul(phi_re, phi_im, s_re, s_im)
        d_re = p_re - k_re
        d_im = p_im - k_im
        # One partial sum per tile, stored at the tile's own slot: deterministic, no atomics.
        tl.store(grad_weight_ptr + pid, tl.sum(tl.where(m, g_re * d_re + g_im * d_im, 0.0)))
    tl.store(grad_ptr + spec_offs, tl.join((1.0 - w) * g_re, (1.0 - w) * g_im), mask=m3)


def _blocks(H: int, W: int) -> tuple[int, int]:
    block_w = min(triton.next_power_of_2(max(W, 1)), _MAX_BLOCK_W)
    block_h = min(triton.next_power_of_2(max(H, 1)), max(1, _TILE_ELEMENTS // block_w))
    return block_h, block_w


def _read_args(src, mask, weight, phase_h, phase_w) -> tuple:
    """Kernel arguments of the read-only inputs: the real views and the real-element strides of src
    (4), mask (3) and weight (1)."""
    src_real = torch.view_as_real(src.resolve_conj())
    return ((src_real, mask, weight, torch.view_as_real(phase_h.resolve_conj()),
             torch.view_as_real(phase_w.resolve_conj())),
            (*src_real.stride()[:4], *mask.stride(), weight.stride(0)))


def dc_blend_(spec, src, mask, weight, phase_h, phase_w, shift_h: int, shift_w: int) -> None:
    """spec <- spec + w M (phi src_shifted - spec) in place: torch.ops.mcmri_fast.dc_blend_."""
    B, C, H, W = spec.shape
    if spec.numel() == 0:
        return
    block_h, block_w = _blocks(H, W)
    grid = (B * C * triton.cdiv(H, block_h) * triton.cdiv(W, block_w),)
    pointers, strides = _read_args(src, mask, weight, phase_h, phase_w)
    _data_consistency_fwd_kernel[grid](
        torch.view_as_real(spec), *pointers,
        C, H, W, shift_h, shift_w, *strides,
        BLOCK_H=block_h, BLOCK_W=block_w, num_warps=_NUM_WARPS,
    )


def dc_blend_backward_(grad_spec, src, mask, weight, phase_h, phase_w, shift_h: int, shift_w: int, spec,
                       grad_src) -> torch.Tensor:
    """Backward of dc_blend_: torch.ops.mcmri_fast.dc_blend_backward_.

    grad_spec <- (1 - w M) grad_spec in place. If grad_src (a caller-allocated [B, C, H, W] tensor,
    any non-overlapping dense strides) is given, every element of it is written. Returns the
    weight-gradient partial sums [B, C, R] if spec is given, else an empty tensor; sum over dims 0
    and 2 for the weight gradient per channel.
    """
    B, C, H, W = grad_spec.shape
    block_h, block_w = _blocks(H, W)
    n_tiles = triton.cdiv(H, block_h) * triton.cdiv(W, block_w)
    grad_weight = weight.new_empty((B, C, n_tiles)) if spec is not None else weight.new_empty(0)
    if grad_spec.numel() == 0:
        return grad_weight
    grad_real = torch.view_as_real(grad_spec)
    pointers, strides = _read_args(src, mask, weight, phase_h, phase_w)
    grad_src_real = torch.view_as_real(grad_src) if grad_src is not None else grad_real
    # Absent outputs and inputs get a placeholder pointer; the constexpr flags keep it untouched.
    _data_consistency_bwd_kernel[(B * C * n_tiles,)](
        grad_real, *pointers,
        torch.view_as_real(spec.resolve_conj()) if spec is not None else grad_real,
        grad_src_real,
        grad_weight if spec is not None else weight,
        C, H, W, shift_h, shift_w, *strides, *grad_src_real.stride()[:4],
        HAS_SPEC=spec is not None, NEED_SRC_GRAD=grad_src is not None,
        BLOCK_H=block_h, BLOCK_W=block_w, num_warps=_NUM_WARPS,
    )
    return grad_weight
