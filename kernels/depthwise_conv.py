"""Triton kernels of the depthwise 3×3 convolution, the twins of the C++ ops
torch.ops.mcmri_fast.depthwise_conv3x3_fwd and depthwise_conv3x3_bwd (their contract is
csrc/depthwise_conv.h; the op, mcmri_fast/ops/depthwise_conv.py, has checked the arguments).

Shapes, once contiguous: x, grad [B, C, H, W], taps [C, 9] (row-major 3×3), bias [C], one dtype:

    forward:  out[b, c, y, x] = bias[c] + Σ_{i,j} taps[c, 3i + j] x[b, c, y + i − 1, x + j − 1]
    grad_x:   the same stencil over grad with the taps rotated by 180° (taps[c, 8 − k]): ROTATE
    taps:     grad_taps[c, 3i + j] = Σ_b Σ_{y,x} grad[b, c, y, x] x[b, c, y + i − 1, x + j − 1]
    bias:     grad_bias[c] = Σ_b Σ_{y,x} grad[b, c, y, x]

One program owns a BLOCK_H × BLOCK_W tile of one plane (b, c): 9 masked shifted loads (the zero
padding is the mask; the neighbouring loads of a tile hit the cache). The backward kernel reduces its
tile into 10 partial sums, one row of a [programs, 10] buffer that torch then sums over the batch and
the tiles in a fixed order: no atomics, deterministic. Half precision is computed in float32, float64
in float64. Plane offsets are int64: B·C·H·W may exceed 2**31.
"""
import torch
import triton
import triton.language as tl

_MAX_BLOCK_W = 64
_MAX_BLOCK_H = 16
_NUM_WARPS = 4


@triton.jit
def _tile(C, H, W, tiles_h, tiles_w, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's channel, the offset of its plane, and the rows [BLOCK_H, 1] and columns
    [1, BLOCK_W] of its tile."""
    pid = tl.program_id(0)
    tiles = tiles_h * tiles_w
    plane = pid // tiles
    tile = pid - plane * tiles
    tile_y = tile // tiles_w
    tile_x = tile - tile_y * tiles_w
    rows = tile_y * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    cols = tile_x * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    return plane % C, plane.to(tl.int64) * H * W, rows, cols


@triton.jit
def _shifted(ptr, base, rows, cols, H, W, DY: tl.constexpr, DX: tl.constexpr, COMPUTE: tl.constexpr):
    """ptr[base + (rows + DY) W + cols + DX], zero outside the plane (the padding)."""
    r = rows + DY
    q = cols + DX
    inside = (r >= 0) & (r < H) & (q >= 0) & (q < W)
    return tl.load(ptr + base + r * W + q, mask=inside, other=0.0).to(COMPUTE)


@triton.jit
def _depthwise_conv3x3_fwd_kernel(x_ptr, taps_ptr, bias_ptr, out_ptr, C, H, W, tiles_h, tiles_w,
                                  ROTATE: tl.constexpr, HAS_BIAS: tl.constexpr, COMPUTE: tl.constexpr,
                                  BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    c, base, rows, cols = _tile(C, H, W, tiles_h, tiles_w, BLOCK_H, BLOCK_W)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=COMPUTE)
    for i in tl.static_range(3):
        for j in tl.static_range(3):
            if ROTATE:
                tap = tl.load(taps_ptr + c * 9 + (8 - 3 * i - j)).to(COMPUTE)
            else:
                tap = tl.load(taps_ptr + c * 9 + (3 * i + j)).to(COMPUTE)
            acc += tap * _shifted(x_ptr, base, rows, cols, H, W, i - 1, j - 1, COMPUTE)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c).to(COMPUTE)
    inside = (rows < H) & (cols < W)
    tl.store(out_ptr + base + rows * W + cols, acc.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _depthwise_conv3x3_bwd_kernel(grad_ptr, x_ptr, partial_ptr, C, H, W, tiles_h, tiles_w,
                                  COMPUTE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    c, base, rows, cols = _tile(C, H, W, tiles_h, tiles_w, BLOCK_H, BLOCK_W)
    row = partial_ptr + tl.program_id(0).to(tl.int64) * 10
    g = _shifted(grad_ptr, base, rows, cols, H, W, 0, 0, COMPUTE)
    for i in tl.static_range(3):
        for j in tl.static_range(3):
            product = g * _shifted(x_ptr, base, rows, cols, H, W, i - 1, j - 1, COMPUTE)
            tl.store(row + (3 * i + j), tl.sum(tl.sum(product, axis=1), axis=0))
    tl.store(row + 9, tl.sum(tl.sum(g, axis=1), axis=0))


def _compute(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _tiling(B: int, C: int, H: int, W: int) -> tuple[tuple[int], dict]:
    """The grid (one program per tile of a plane) and the tile sizes."""
    block_w = min(triton.next_power_of_2(W), _MAX_BLOCK_W)
    block_h = min(triton.next_power_of_2(H), _MAX_BLOCK_H)
    tiles_h, tiles_w = triton.cdiv(H, block_h), triton.cdiv(W, block_w)
    return (B * C * tiles_h * tiles_w,), dict(
        tiles_h=tiles_h, tiles_w=tiles_w, BLOCK_H=block_h, BLOCK_W=block_w, num_warps=_NUM_WARPS
    )


def _stencil(x, taps, bias, rotate: bool, out) -> None:
    B, C, H, W = x.shape
    grid, meta = _tiling(B, C, H, W)
    _depthwise_conv3x3_fwd_kernel[grid](
        x, taps, taps if bias is None else bias, out, C, H, W,
        ROTATE=rotate, HAS_BIAS=bias is not None, COMPUTE=_compute(x.dtype), **meta,
    )


def depthwise_conv3x3_fwd(x, weight, bias) -> torch.Tensor:
    """torch.ops.mcmri_fast.depthwise_conv3x3_fwd (csrc/depthwise_conv.h): inputs of any strides, contiguous
    output."""
    C = x.shape[1]
    x = x.contiguous()
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    _stencil(x, weight.reshape(C, 9).contiguous(), None if bias is None else bias.contiguous(), False, out)
    return out


def depthwise_conv3x3_bwd(grad, x, weight, need_x: bool, need_weight: bool, need_bias: bool):
    """torch.ops.mcmri_fast.depthwise_conv3x3_bwd (csrc/depthwise_conv.h): (grad_x, grad_weight, grad_bias),
    contiguous, an empty tensor for each one not asked for; grad of any strides (a stride-0 gradient is
    materialised: the kernels read rows contiguously)."""
    B, C, H, W = x.shape
    grad, x = grad.contiguous(), x.contiguous()
    # Each gradient not asked for is an empty tensor of its own (custom-op outputs may not alias).
    grad_x, grad_weight, grad_bias = x.new_empty(0), x.new_empty(0), x.new_empty(0)
    if need_x:
        grad_x = torch.empty_like(x)
        if grad_x.numel() > 0:
            _stencil(grad, weight.reshape(C, 9).contiguous(), None, True, grad_x)
    if need_weight or need_bias:
        compute = torch.float64 if x.dtype == torch.float64 else torch.float32
        if x.numel() == 0:
            sums = torch.zeros(C, 10, dtype=compute, device=x.device)
        else:
            grid, meta = _tiling(B, C, H, W)
            partial = torch.empty(grid[0], 10, dtype=compute, device=x.device)
            _depthwise_conv3x3_bwd_kernel[grid](grad, x, partial, C, H, W, COMPUTE=_compute(x.dtype), **meta)
            # Rows are (b, c, tile): summed over the batch and the tiles, in a fixed order.
            sums = partial.view(B, C, -1, 10).sum(dim=(0, 2))
        # Copies, never views of sums: with C = 1 both would alias it.
        if need_weight:
            grad_weight = sums[:, :9].reshape(weight.shape).to(weight.dtype, copy=True)
        if need_bias:
            grad_bias = sums[:, 9].to(x.dtype, copy=True)
    return grad_x, grad_weight, grad_bias
