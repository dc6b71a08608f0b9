"""Triton kernels of the warp, the twins of the C++ ops torch.ops.mcmri_fast.warp_fwd and warp_bwd (their
contract and the arithmetic, ATen's GridSampler.h in pixel units, are csrc/warp.h; the op,
mcmri_fast/ops/warp.py, has checked the arguments).

Shapes: image, grad [B, C, H, W], flow [B, 2, H, W] (channel 0 along W, 1 along H), one dtype (float32 or
float64), contiguous. out[b, c, i, j] is image[b, c] sampled bilinearly at (j + flow[b, 0, i, j],
i + flow[b, 1, i, j]) after the padding mode's transform (PADDING 0 zeros, 1 border, 2 reflection).

One program owns BLOCK pixels of one sample and loops over the channels: the footprint (four corner
offsets and weights) is computed once per pixel. The backward writes the flow's gradient per pixel and
adds the image's to the four corners with atomics. Offsets are int64.
"""
import torch
import triton
import triton.language as tl

_BLOCK = 256
_NUM_WARPS = 4


@triton.jit
def _coordinate(coord, size, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr):
    """(the coordinate after the padding's transform, its derivative): csrc/warp.h's warp_coordinate."""
    if PADDING == 0:
        # clamped to [-2, size + 1]: a sample there reads only zeros either way (see warp.h)
        return tl.minimum(tl.maximum(coord, -2.0), size + 1.0), tl.full(coord.shape, 1.0, coord.dtype)
    grad = tl.full(coord.shape, 1.0, coord.dtype)
    if PADDING == 2:
        if ALIGN_CORNERS:
            low, span = 0.0, size - 1.0
        else:
            low, span = -0.5, size * 1.0
        t = coord - low
        sign = tl.where(t < 0, -1.0, 1.0)
        t = tl.abs(t)
        flips = tl.floor(t / span)
        extra = t - flips * span
        even = flips - 2.0 * tl.floor(flips * 0.5) == 0
        coord = tl.where(even, extra + low, span - extra + low)
        grad = tl.where(even, sign, -sign)
    top = size - 1.0
    grad = tl.where((coord <= 0) | (coord >= top), 0.0, grad)
    return tl.minimum(tl.maximum(coord, 0.0), top), grad


@triton.jit
def _footprint(flow_ptr, b, H, W, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr, BLOCK: tl.constexpr):
    """This program's pixels p (and their mask), the four corner offsets in a plane and whether each lies
    inside the image, the fractions (fx, fy) and the padding's derivatives (dx, dy)."""
    HW = H * W
    p = (tl.program_id(0) % tl.cdiv(HW, BLOCK)) * BLOCK + tl.arange(0, BLOCK)
    valid = p < HW
    i = p // W
    j = p - i * W
    flow_base = b.to(tl.int64) * 2 * HW
    flow_x = tl.load(flow_ptr + flow_base + p, mask=valid, other=0.0)
    flow_y = tl.load(flow_ptr + flow_base + HW + p, mask=valid, other=0.0)
    x, dx = _coordinate(j.to(flow_x.dtype) + flow_x, W, PADDING, ALIGN_CORNERS)
    y, dy = _coordinate(i.to(flow_y.dtype) + flow_y, H, PADDING, ALIGN_CORNERS)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0 = x0f.to(tl.int64)
    y0 = y0f.to(tl.int64)
    x1 = x0 + 1
    y1 = y0 + 1
    in_x0 = (x0 >= 0) & (x0 < W)
    in_x1 = (x1 >= 0) & (x1 < W)
    in_y0 = (y0 >= 0) & (y0 < H)
    in_y1 = (y1 >= 0) & (y1 < H)
    in00 = valid & in_x0 & in_y0
    in01 = valid & in_x1 & in_y0
    in10 = valid & in_x0 & in_y1
    in11 = valid & in_x1 & in_y1
    o00 = y0 * W + x0
    return p, valid, o00, o00 + 1, o00 + W, o00 + W + 1, in00, in01, in10, in11, fx, fy, dx, dy


@triton.jit
def _warp_fwd_kernel(image_ptr, flow_ptr, out_ptr, C, H, W, PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr,
                     BLOCK: tl.constexpr):
    b = tl.program_id(0) // tl.cdiv(H * W, BLOCK)
    p, valid, o00, o01, o10, o11, in00, in01, in10, in11, fx, fy, dx, dy = _footprint(
        flow_ptr, b, H, W, PADDING, ALIGN_CORNERS, BLOCK)
    w00 = (1 - fx) * (1 - fy)
    w01 = fx * (1 - fy)
    w10 = (1 - fx) * fy
    w11 = fx * fy
    HW = H * W
    for c in range(C):
        base = (b.to(tl.int64) * C + c) * HW
        v = w00 * tl.load(image_ptr + base + o00, mask=in00, other=0.0)
        v += w01 * tl.load(image_ptr + base + o01, mask=in01, other=0.0)
        v += w10 * tl.load(image_ptr + base + o10, mask=in10, other=0.0)
        v += w11 * tl.load(image_ptr + base + o11, mask=in11, other=0.0)
        tl.store(out_ptr + base + p, v, mask=valid)


@triton.jit
def _warp_bwd_kernel(grad_ptr, image_ptr, flow_ptr, grad_image_ptr, grad_flow_ptr, C, H, W,
                     PADDING: tl.constexpr, ALIGN_CORNERS: tl.constexpr, NEED_IMAGE: tl.constexpr,
                     NEED_FLOW: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0) // tl.cdiv(H * W, BLOCK)
    p, valid, o00, o01, o10, o11, in00, in01, in10, in11, fx, fy, dx, dy = _footprint(
        flow_ptr, b, H, W, PADDING, ALIGN_CORNERS, BLOCK)
    HW = H * W
    gx = tl.zeros(fx.shape, fx.dtype)
    gy = tl.zeros(fy.shape, fy.dtype)
    for c in range(C):
        base = (b.to(tl.int64) * C + c) * HW
        g = tl.load(grad_ptr + base + p, mask=valid, other=0.0)
        if NEED_IMAGE:
            tl.atomic_add(grad_image_ptr + base + o00, (1 - fx) * (1 - fy) * g, mask=in00)
            tl.atomic_add(grad_image_ptr + base + o01, fx * (1 - fy) * g, mask=in01)
            tl.atomic_add(grad_image_ptr + base + o10, (1 - fx) * fy * g, mask=in10)
            tl.atomic_add(grad_image_ptr + base + o11, fx * fy * g, mask=in11)
        if NEED_FLOW:
            v00 = tl.load(image_ptr + base + o00, mask=in00, other=0.0)
            v01 = tl.load(image_ptr + base + o01, mask=in01, other=0.0)
            v10 = tl.load(image_ptr + base + o10, mask=in10, other=0.0)
            v11 = tl.load(image_ptr + base + o11, mask=in11, other=0.0)
            gx += g * ((1 - fy) * (v01 - v00) + fy * (v11 - v10))
            gy += g * ((1 - fx) * (v10 - v00) + fx * (v11 - v01))
    if NEED_FLOW:
        flow_base = b.to(tl.int64) * 2 * HW
        tl.store(grad_flow_ptr + flow_base + p, gx * dx, mask=valid)
        tl.store(grad_flow_ptr + flow_base + HW + p, gy * dy, mask=valid)


def _grid(image: torch.Tensor) -> tuple[int]:
    B, _, H, W = image.shape
    return (B * triton.cdiv(H * W, _BLOCK),)


def warp_fwd(image, flow, padding: int, align_corners: bool) -> torch.Tensor:
    """torch.ops.mcmri_fast.warp_fwd (csrc/warp.h): out [B, C, H, W], contiguous."""
    out = torch.empty_like(image, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    _, C, H, W = image.shape
    _warp_fwd_kernel[_grid(image)](image, flow, out, C, H, W, PADDING=padding, ALIGN_CORNERS=align_corners,
                                   BLOCK=_BLOCK, num_warps=_NUM_WARPS)
    return out


def warp_bwd(grad, image, flow, padding: int, align_corners: bool, need_image: bool, need_flow: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ops.mcmri_fast.warp_bwd (csrc/warp.h): (grad_image, grad_flow), an empty tensor for each one
    not asked for."""
    grad_image = torch.zeros_like(image) if need_image else image.new_empty(0)
    grad_flow = torch.zeros_like(flow) if need_flow else flow.new_empty(0)
    if image.numel() == 0 or not (need_image or need_flow):
        return grad_image, grad_flow
    _, C, H, W = image.shape
    _warp_bwd_kernel[_grid(image)](grad, image, flow, grad_image, grad_flow, C, H, W, PADDING=padding,
                                   ALIGN_CORNERS=align_corners, NEED_IMAGE=need_image, NEED_FLOW=need_flow,
                                   BLOCK=_BLOCK, num_warps=_NUM_WARPS)
    return grad_image, grad_flow
