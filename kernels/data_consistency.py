"""Triton kernels of the data-consistency spectral blend, the GPU twin of the C++ ops
torch.ops.mcmri_fast.dc_blend_ and dc_blend_backward_ (csrc/cpu/data_consistency.cpp is the spec).

Shapes: spec [B, C, H, W] complex64/128; src [B, Cs, H, W] with Cs in {1, C}; mask uint8 [Bm, Hm, W]
with Bm in {1, B}, Hm in {1, H}; weight real [Cw] with Cw in {1, C}; phase_h [H] and phase_w [W]
complex. A size-1 dimension broadcasts (it is indexed at 0). With si = (i + shift_h) mod H,
sj = (j + shift_w) mod W, phi = phase_h[i] phase_w[j], m = mask[b, si, sj], w = weight[c]:

    forward (in place):  spec[b,c,i,j] <- k + w m (phi src[b,c,si,sj] - k),  k = spec[b,c,i,j]
    backward, g = grad_spec[b,c,i,j]:
        grad_spec[b,c,i,j] <- (1 - w m) g                                    (in place)
        grad_src[b,c,si,sj] = conj(phi) w m g                                ([B, C, H, W], full C)
        grad_weight_part[b,c,t] = sum over tile t of m Re(conj(g) (phi src[b,c,si,sj] - spec[b,c,i,j]))

One program owns a BLOCK_H x BLOCK_W tile of one (b, c) plane. Complex tensors are passed as
torch.view_as_real views and loaded as [BLOCK_H, BLOCK_W, 2] tiles (contiguous in memory, so the
loads coalesce), then tl.split into real and imaginary parts.
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
def _tile_operands(src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, bc, b, c, i, j, si, sj, H, W,
                   src_channels, src_c_step, mask_b_step, mask_rows, mask_h_step, weight_step):
    """Offsets of the spec tile and of the src tile, the mask m (False outside the tensor), w and phi."""
    ri = tl.arange(0, 2)[None, None, :]
    # Row offsets in int64: B*C*H*W*2 may exceed 2**31; column offsets stay small.
    spec_offs = ((bc.to(tl.int64) * H + i) * W * 2)[:, None, None] + (j * 2)[None, :, None] + ri
    src_plane = b.to(tl.int64) * src_channels + c * src_c_step
    src_offs = ((src_plane * H + si) * W * 2)[:, None, None] + (sj * 2)[None, :, None] + ri
    mask_row = b.to(tl.int64) * mask_b_step * mask_rows + si * mask_h_step
    in_bounds = (i < H)[:, None] & (j < W)[None, :]
    m = tl.load(mask_ptr + (mask_row * W)[:, None] + sj[None, :], mask=in_bounds, other=0) != 0
    w = tl.load(weight_ptr + c * weight_step)
    ph_re = tl.load(ph_ptr + 2 * i, mask=i < H, other=0.0)
    ph_im = tl.load(ph_ptr + 2 * i + 1, mask=i < H, other=0.0)
    pw_re = tl.load(pw_ptr + 2 * j, mask=j < W, other=0.0)
    pw_im = tl.load(pw_ptr + 2 * j + 1, mask=j < W, other=0.0)
    phi_re = ph_re[:, None] * pw_re[None, :] - ph_im[:, None] * pw_im[None, :]
    phi_im = ph_re[:, None] * pw_im[None, :] + ph_im[:, None] * pw_re[None, :]
    return spec_offs, src_offs, in_bounds, m, w, phi_re, phi_im


@triton.jit
def _data_consistency_fwd_kernel(
    spec_ptr, src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr,
    C, H, W, shift_h, shift_w,
    src_channels, src_c_step, mask_b_step, mask_rows, mask_h_step, weight_step,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid, bc, b, c, i, j, si, sj = _tile(C, H, W, shift_h, shift_w, BLOCK_H, BLOCK_W)
    spec_offs, src_offs, in_bounds, m, w, phi_re, phi_im = _tile_operands(
        src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, bc, b, c, i, j, si, sj, H, W,
        src_channels, src_c_step, mask_b_step, mask_rows, mask_h_step, weight_step)
    # Unsampled positions (m == 0) keep their value: they are neither read nor written.
    m3 = m[:, :, None]
    k_re, k_im = tl.split(tl.load(spec_ptr + spec_offs, mask=m3, other=0.0))
    s_re, s_im = tl.split(tl.load(src_ptr + src_offs, mask=m3, other=0.0))
    p_re = phi_re * s_re - phi_im * s_im
    p_im = phi_re * s_im + phi_im * s_re
    out_re = k_re + w * (p_re - k_re)
    out_im = k_im + w * (p_im - k_im)
    tl.store(spec_ptr + spec_offs, tl.join(out_re, out_im), mask=m3)


@triton.jit
def _data_consistency_bwd_kernel(
    grad_ptr, src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, spec_ptr, grad_src_ptr, grad_weight_ptr,
    C, H, W, shift_h, shift_w,
    src_channels, src_c_step, mask_b_step, mask_rows, mask_h_step, weight_step,
    HAS_SPEC: tl.constexpr, NEED_SRC_GRAD: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    pid, bc, b, c, i, j, si, sj = _tile(C, H, W, shift_h, shift_w, BLOCK_H, BLOCK_W)
    spec_offs, src_offs, in_bounds, m, w, phi_re, phi_im = _tile_operands(
        src_ptr, mask_ptr, weight_ptr, ph_ptr, pw_ptr, bc, b, c, i, j, si, sj, H, W,
        src_channels, src_c_step, mask_b_step, mask_rows, mask_h_step, weight_step)
    m3 = m[:, :, None]
    # Every output depends on g only where m == 1, so g is read there only.
    g_re, g_im = tl.split(tl.load(grad_ptr + spec_offs, mask=m3, other=0.0))
    if NEED_SRC_GRAD:
        # grad_src is [B, C, H, W]: the tile scatters to its source rows si and columns sj, and
        # writes zeros where m == 0 so that every element of the new tensor is written once.
        wg_re = tl.where(m, w * g_re, 0.0)
        wg_im = tl.where(m, w * g_im, 0.0)
        gs_re = phi_re * wg_re + phi_im * wg_im
        gs_im = phi_re * wg_im - phi_im * wg_re
        gs_rows = (bc.to(tl.int64) * H + si) * W * 2
        gs_offs = gs_rows[:, None, None] + (sj * 2)[None, :, None] + tl.arange(0, 2)[None, None, :]
        tl.store(grad_src_ptr + gs_offs, tl.join(gs_re, gs_im), mask=in_bounds[:, :, None])
    if HAS_SPEC:
        k_re, k_im = tl.split(tl.load(spec_ptr + spec_offs, mask=m3, other=0.0))
        s_re, s_im = tl.split(tl.load(src_ptr + src_offs, mask=m3, other=0.0))
        d_re = phi_re * s_re - phi_im * s_im - k_re
        d_im = phi_re * s_im + phi_im * s_re - k_im
        # One partial sum per tile, stored at the tile's own slot: deterministic, no atomics.
        tl.store(grad_weight_ptr + pid, tl.sum(tl.where(m, g_re * d_re + g_im * d_im, 0.0)))
    tl.store(grad_ptr + spec_offs, tl.join((1.0 - w) * g_re, (1.0 - w) * g_im), mask=m3)


def _blocks(H: int, W: int) -> tuple[int, int]:
    block_w = min(triton.next_power_of_2(max(W, 1)), _MAX_BLOCK_W)
    block_h = min(triton.next_power_of_2(max(H, 1)), max(1, _TILE_ELEMENTS // block_w))
    return block_h, block_w


def _broadcast_args(src, mask, weight) -> tuple[int, ...]:
    """src_channels, src_c_step, mask_b_step, mask_rows, mask_h_step, weight_step (a step of 0 broadcasts)."""
    return (src.shape[1], int(src.shape[1] > 1), int(mask.shape[0] > 1), mask.shape[1],
            int(mask.shape[1] > 1), int(weight.shape[0] > 1))


def blend_forward_(spec, src, mask, weight, phase_h, phase_w, shift_h: int, shift_w: int) -> None:
    """spec <- spec + w M (phi src_shifted - spec) in place; the semantics of torch.ops.mcmri_fast.dc_blend_."""
    B, C, H, W = spec.shape
    if spec.numel() == 0:
        return
    block_h, block_w = _blocks(H, W)
    grid = (B * C * triton.cdiv(H, block_h) * triton.cdiv(W, block_w),)
    _data_consistency_fwd_kernel[grid](
        torch.view_as_real(spec), torch.view_as_real(src), mask, weight,
        torch.view_as_real(phase_h), torch.view_as_real(phase_w),
        C, H, W, shift_h, shift_w, *_broadcast_args(src, mask, weight),
        BLOCK_H=block_h, BLOCK_W=block_w, num_warps=_NUM_WARPS,
    )


def blend_backward_(grad_spec, src, mask, weight, phase_h, phase_w, shift_h: int, shift_w: int, spec,
                    need_src_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Backward of blend_forward_; the semantics of torch.ops.mcmri_fast.dc_blend_backward_.

    grad_spec <- (1 - w M) grad_spec in place. Returns (grad_src [B, C, H, W] or an empty tensor
    unless need_src_grad, grad_weight partial sums [B, C, R] or an empty tensor unless spec is
    given; sum over dims 0 and 2 for the weight gradient per channel).
    """
    B, C, H, W = grad_spec.shape
    block_h, block_w = _blocks(H, W)
    n_tiles = triton.cdiv(H, block_h) * triton.cdiv(W, block_w)
    grad_src = torch.empty_like(grad_spec) if need_src_grad else grad_spec.new_empty(0)
    grad_weight = weight.new_empty((B, C, n_tiles)) if spec is not None else weight.new_empty(0)
    if grad_spec.numel() == 0:
        return grad_src, grad_weight
    grad_real = torch.view_as_real(grad_spec)
    # Absent outputs and inputs get a placeholder pointer; the constexpr flags keep it untouched.
    _data_consistency_bwd_kernel[(B * C * n_tiles,)](
        grad_real, torch.view_as_real(src), mask, weight,
        torch.view_as_real(phase_h), torch.view_as_real(phase_w),
        torch.view_as_real(spec) if spec is not None else grad_real,
        torch.view_as_real(grad_src) if need_src_grad else grad_real,
        grad_weight if spec is not None else weight,
        C, H, W, shift_h, shift_w, *_broadcast_args(src, mask, weight),
        HAS_SPEC=spec is not None, NEED_SRC_GRAD=need_src_grad,
        BLOCK_H=block_h, BLOCK_W=block_w, num_warps=_NUM_WARPS,
    )
    return grad_src, grad_weight
