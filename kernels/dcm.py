"""Triton kernels of IMA's DCM data-consistency step, the twins of the C++ ops torch.ops.mcmri_fast.dcm_prologue,
dcm_blend, dcm_epilogue, dcm_split and dcm_backward (their contract is csrc/dcm.h; the op,
mcmri_fast/ops/dcm.py, has checked the arguments and made them contiguous).

Images [B, C, H, W] (N = their size), spectra [B, C, H, Wh] complex (read as interleaved real pairs),
masks [Bm, Hm, Wh] broadcast over the batch (Bm = 1) or the rows (Hm = 1: column masks); coef = [μ, α, λ].
Every kernel is one pass, BLOCK elements a program; the backward's programs own one block of one plane
(b, c) and write their partial sums, which torch sums in order (deterministic). Offsets are int64.
"""
import torch
import triton
import triton.language as tl

_BLOCK = 1024
_NUM_WARPS = 4


def _compute(dtype: torch.dtype):
    return tl.float64 if dtype in (torch.float64, torch.complex128) else tl.float32


@triton.jit
def _coefficients(coef_ptr, COMPUTE: tl.constexpr):
    return tl.load(coef_ptr).to(COMPUTE), tl.load(coef_ptr + 1).to(COMPUTE), tl.load(coef_ptr + 2).to(COMPUTE)


@triton.jit
def _block_of(a_ptr, x_ptr, g_ptr, r_ptr, N, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    """This program's offsets, their mask, and its elements of a, x, g and r."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    a = tl.load(a_ptr + offs, mask=inside).to(COMPUTE)
    x = tl.load(x_ptr + offs, mask=inside).to(COMPUTE)
    g = tl.load(g_ptr + offs, mask=inside).to(COMPUTE)
    r = tl.load(r_ptr + offs, mask=inside).to(COMPUTE)
    return offs, inside, a, x, g, r


@triton.jit
def _prologue_kernel(x_ptr, z_ptr, g_ptr, r_ptr, coef_ptr, out_ptr, N, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs, inside, z, x, g, r = _block_of(z_ptr, x_ptr, g_ptr, r_ptr, N, COMPUTE, BLOCK)
    _, alpha, lam = _coefficients(coef_ptr, COMPUTE)
    tl.store(out_ptr + offs, z - x, mask=inside)
    tl.store(out_ptr + N + offs, alpha * (x - g) + lam * r, mask=inside)


@triton.jit
def _epilogue_kernel(y_ptr, x_ptr, g_ptr, r_ptr, coef_ptr, out_ptr, N, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs, inside, y, x, g, r = _block_of(y_ptr, x_ptr, g_ptr, r_ptr, N, COMPUTE, BLOCK)
    mu, alpha, lam = _coefficients(coef_ptr, COMPUTE)
    tl.store(out_ptr + offs, x - mu * (alpha * (x - g) + lam * r) + y, mask=inside)


@triton.jit
def _mask_offsets(offs, C, H, Wh, PER_SAMPLE: tl.constexpr, PER_ROW: tl.constexpr):
    """The mask offsets of spectrum elements offs of [B, C, H, Wh]."""
    j = offs % Wh
    row = offs // Wh
    b = row // (C * H)
    if PER_ROW:
        if PER_SAMPLE:
            m = (b * H + row % H) * Wh + j
        else:
            m = (row % H) * Wh + j
    else:
        if PER_SAMPLE:
            m = b * Wh + j
        else:
            m = j
    return m


@triton.jit
def _blend_kernel(spec_ptr, mask0_ptr, mask_u_ptr, coef_ptr, out_ptr, N, C, H, Wh, PER_SAMPLE: tl.constexpr,
                  PER_ROW: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    mu = tl.load(coef_ptr).to(COMPUTE)
    m = _mask_offsets(offs, C, H, Wh, PER_SAMPLE, PER_ROW)
    w0 = tl.load(mask0_ptr + m, mask=inside).to(COMPUTE)
    wu = mu * tl.load(mask_u_ptr + m, mask=inside).to(COMPUTE)
    for part in tl.static_range(2):  # real, imaginary
        a = tl.load(spec_ptr + 2 * offs + part, mask=inside).to(COMPUTE)
        d = tl.load(spec_ptr + 2 * (N + offs) + part, mask=inside).to(COMPUTE)
        tl.store(out_ptr + 2 * offs + part, w0 * a + wu * d, mask=inside)


@triton.jit
def _split_kernel(spec_ptr, mask0_ptr, mask_u_ptr, out_ptr, N, C, H, Wh, PER_SAMPLE: tl.constexpr,
                  PER_ROW: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < N
    m = _mask_offsets(offs, C, H, Wh, PER_SAMPLE, PER_ROW)
    w0 = tl.load(mask0_ptr + m, mask=inside).to(COMPUTE)
    wu = tl.load(mask_u_ptr + m, mask=inside).to(COMPUTE)
    for part in tl.static_range(2):
        s = tl.load(spec_ptr + 2 * offs + part, mask=inside).to(COMPUTE)
        tl.store(out_ptr + 2 * offs + part, w0 * s, mask=inside)
        tl.store(out_ptr + 2 * (N + offs) + part, wu * s, mask=inside)


@triton.jit
def _backward_kernel(grad_ptr, proj_ptr, x_ptr, g_ptr, r_ptr, coef_ptr, grad_x_ptr, grad_z_ptr, grad_g_ptr,
                     grad_r_ptr, partials_ptr, N, plane, n_blocks, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    bc = tl.program_id(0)
    block = tl.program_id(1)
    j = block * BLOCK + tl.arange(0, BLOCK)
    inside = j < plane
    offs = bc.to(tl.int64) * plane + j
    mu, alpha, lam = _coefficients(coef_ptr, COMPUTE)
    gr = tl.load(grad_ptr + offs, mask=inside, other=0.0).to(COMPUTE)
    p0 = tl.load(proj_ptr + offs, mask=inside, other=0.0).to(COMPUTE)
    pu = tl.load(proj_ptr + N + offs, mask=inside, other=0.0).to(COMPUTE)
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(COMPUTE)
    g = tl.load(g_ptr + offs, mask=inside, other=0.0).to(COMPUTE)
    r = tl.load(r_ptr + offs, mask=inside, other=0.0).to(COMPUTE)
    w = pu - gr
    e = mu * w
    tl.store(grad_x_ptr + offs, gr - p0 + alpha * e, mask=inside)
    tl.store(grad_z_ptr + offs, p0, mask=inside)
    tl.store(grad_g_ptr + offs, -alpha * e, mask=inside)
    tl.store(grad_r_ptr + offs, lam * e, mask=inside)
    # masked lanes load zeros: they add nothing
    base = (bc.to(tl.int64) * n_blocks + block) * 3
    tl.store(partials_ptr + base, tl.sum((alpha * (x - g) + lam * r) * w, axis=0))
    tl.store(partials_ptr + base + 1, tl.sum((x - g) * e, axis=0))
    tl.store(partials_ptr + base + 2, tl.sum(r * e, axis=0))


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, _BLOCK),)


def dcm_prologue(x, z, g, r, coef) -> torch.Tensor:
    """torch.ops.mcmri_fast.dcm_prologue (csrc/dcm.h): [2, B, C, H, W] = (z − x, α(x − g) + λr)."""
    out = x.new_empty((2,) + tuple(x.shape))
    if x.numel():
        _prologue_kernel[_grid(x.numel())](x, z, g, r, coef, out, x.numel(), COMPUTE=_compute(x.dtype), BLOCK=_BLOCK,
                                           num_warps=_NUM_WARPS)
    return out


def dcm_epilogue(y, x, g, r, coef) -> torch.Tensor:
    """torch.ops.mcmri_fast.dcm_epilogue (csrc/dcm.h): x − μ(α(x − g) + λr) + y."""
    out = torch.empty_like(x)
    if x.numel():
        _epilogue_kernel[_grid(x.numel())](y, x, g, r, coef, out, x.numel(), COMPUTE=_compute(x.dtype), BLOCK=_BLOCK,
                                           num_warps=_NUM_WARPS)
    return out


def _mask_meta(spec_plane, mask0) -> dict:
    B, C, H, Wh = spec_plane
    return dict(PER_SAMPLE=mask0.shape[0] > 1, PER_ROW=mask0.shape[1] > 1, COMPUTE=_compute(mask0.dtype), BLOCK=_BLOCK,
                num_warps=_NUM_WARPS)


def dcm_blend(spec, mask0, mask_u, coef) -> torch.Tensor:
    """torch.ops.mcmri_fast.dcm_blend (csrc/dcm.h): [B, C, H, Wh] = m̄₀ · spec[0] + μ m̄ᵤ · spec[1]."""
    B, C, H, Wh = spec.shape[1:]
    out = spec.new_empty(spec.shape[1:])
    n = out.numel()
    if n:
        _blend_kernel[_grid(n)](torch.view_as_real(spec), mask0, mask_u, coef, torch.view_as_real(out), n, C, H, Wh,
                                **_mask_meta(spec.shape[1:], mask0))
    return out


def dcm_split(spec, mask0, mask_u) -> torch.Tensor:
    """torch.ops.mcmri_fast.dcm_split (csrc/dcm.h): [2, B, C, H, Wh] = (m̄₀ · spec, m̄ᵤ · spec)."""
    B, C, H, Wh = spec.shape
    out = spec.new_empty((2,) + tuple(spec.shape))
    n = spec.numel()
    if n:
        _split_kernel[_grid(n)](torch.view_as_real(spec), mask0, mask_u, torch.view_as_real(out), n, C, H, Wh,
                                **_mask_meta(spec.shape, mask0))
    return out


def dcm_backward(grad, proj, x, g, r, coef):
    """torch.ops.mcmri_fast.dcm_backward (csrc/dcm.h): (grad_x, grad_z, grad_g, grad_r, coef_rows [B·C, 3])."""
    B, C, H, W = x.shape
    plane = H * W
    outputs = [torch.empty_like(x) for _ in range(4)]
    n_blocks = max(triton.cdiv(plane, _BLOCK), 1)
    partials = x.new_zeros((B * C, n_blocks, 3))
    if x.numel():
        _backward_kernel[(B * C, n_blocks)](grad, proj, x, g, r, coef, *outputs, partials, x.numel(), plane, n_blocks,
                                            COMPUTE=_compute(x.dtype), BLOCK=_BLOCK, num_warps=_NUM_WARPS)
    return (*outputs, partials.sum(1))
