"""Triton kernels of channel attention's N-sized passes, the twins of the C++ ops
torch.ops.mcmri_fast.channel_attention_gram / _apply / _backward_pass (their contract is
csrc/channel_attention.h; the op, mcmri_fast/ops/channel_attention.py, has checked the arguments and
runs these around the tiny per-head math).

Every N-sized operand is a contiguous [BH, d, N] block of rows (BH = batch x heads). Tiles are
[D, BLOCK_N] (D = next power of two of the head dim, rows and pixels masked); values are converted to
the accumulation dtype (float32, float64 for float64 inputs) on load, outputs back to their own dtype.

* _channel_attention_gram_kernel: the Gram a bᵀ and the squared row norms are a reduction over all N
  pixels, split across programs: program (bh, s) sums its run of pixel tiles and stores its partial at
  its own slot [BH, S, ...]; the launcher sums the S partials (fixed order: deterministic, no atomics).
* _channel_attention_fwd_kernel: out = attn v, one program per (bh, pixel tile).
* _channel_attention_bwd_kernel: gq = mq k + diag(dq) q, gk = mqᵀ q + diag(dk) k, gv = attnᵀ gO, all
  three from one read of the (bh, pixel tile) of q, k and gO.

The small matrix products use a broadcast multiply and tl.sum when a head has fewer than 16 channels
(tl.dot needs every dim ≥ 16; FSMNet's heads have 8), tl.dot otherwise ("ieee" precision: TF32 would
lose float32 accuracy; float64 always takes the broadcast path).
"""
import torch
import triton
import triton.language as tl

# Elements of the broadcast product [DA, DB, BLOCK_N] per program: 64 float32 per thread at 4 warps.
_PRODUCT_ELEMENTS = 8192
_MIN_BLOCK_N = 16
_MAX_BLOCK_N = 256
# Gram programs per (b, head) at most: enough to fill a GPU for batch x heads = 8, few partials to sum.
_MAX_SPLITS = 64
_NUM_WARPS = 4
# The tl.dot path holds [64, 64] tiles of five operands in the backward: twice the warps keep them in registers.
_NUM_WARPS_DOT = 8


@triton.jit
def _load_rows(ptr, bh, d, N, n0, D: tl.constexpr, BLOCK_N: tl.constexpr, acc_ty: tl.constexpr):
    """The [D, BLOCK_N] tile of rows [0, d) and pixels [n0, n0 + BLOCK_N) of block bh of a contiguous
    [BH, d, N] tensor, zero outside, in the accumulation dtype."""
    rows = tl.arange(0, D)
    cols = n0 + tl.arange(0, BLOCK_N)
    offs = (bh.to(tl.int64) * d + rows)[:, None] * N + cols[None, :]
    mask = (rows < d)[:, None] & (cols < N)[None, :]
    return tl.load(ptr + offs, mask=mask, other=0.0).to(acc_ty)


@triton.jit
def _store_rows(ptr, tile, bh, d, N, n0, D: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.arange(0, D)
    cols = n0 + tl.arange(0, BLOCK_N)
    offs = (bh.to(tl.int64) * d + rows)[:, None] * N + cols[None, :]
    mask = (rows < d)[:, None] & (cols < N)[None, :]
    tl.store(ptr + offs, tile.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _load_small(ptr, bh, m, n, M: tl.constexpr, NN: tl.constexpr):
    """The [M, NN] tile of a contiguous [BH, m, n] tiny tensor's block bh, zero outside."""
    rows = tl.arange(0, M)
    cols = tl.arange(0, NN)
    offs = bh.to(tl.int64) * m * n + rows[:, None] * n + cols[None, :]
    return tl.load(ptr + offs, mask=(rows < m)[:, None] & (cols < n)[None, :], other=0.0)


@triton.jit
def _matmul_rows(coef, rows, USE_DOT: tl.constexpr):
    """coef [M, K] @ rows [K, BLOCK_N]."""
    if USE_DOT:
        return tl.dot(coef, rows, input_precision="ieee")
    return tl.sum(coef[:, :, None] * rows[None, :, :], axis=1)


@triton.jit
def _matmul_t_rows(coef, rows, USE_DOT: tl.constexpr):
    """coefᵀ @ rows for coef [K, M], rows [K, BLOCK_N]."""
    if USE_DOT:
        return tl.dot(tl.trans(coef), rows, input_precision="ieee")
    return tl.sum(coef[:, :, None] * rows[:, None, :], axis=0)


@triton.jit
def _channel_attention_gram_kernel(
    a_ptr, b_ptr, gram_ptr, a_sq_ptr, b_sq_ptr,
    da, db, N, tiles_per_split, n_splits,
    DA: tl.constexpr, DB: tl.constexpr, BLOCK_N: tl.constexpr,
    WITH_NORMS: tl.constexpr, USE_DOT: tl.constexpr,
):
    bh = tl.program_id(0)
    split = tl.program_id(1)
    acc_ty = gram_ptr.dtype.element_ty
    gram = tl.zeros((DA, DB), dtype=acc_ty)
    a_sq = tl.zeros((DA,), dtype=acc_ty)
    b_sq = tl.zeros((DB,), dtype=acc_ty)
    for t in range(0, tiles_per_split):
        n0 = (split * tiles_per_split + t) * BLOCK_N
        a = _load_rows(a_ptr, bh, da, N, n0, DA, BLOCK_N, acc_ty)
        b = _load_rows(b_ptr, bh, db, N, n0, DB, BLOCK_N, acc_ty)
        if USE_DOT:
            gram += tl.dot(a, tl.trans(b), input_precision="ieee")
        else:
            gram += tl.sum(a[:, None, :] * b[None, :, :], axis=2)
        if WITH_NORMS:
            a_sq += tl.sum(a * a, axis=1)
            b_sq += tl.sum(b * b, axis=1)
    # The partial of program (bh, split) at its own slot of [BH, S, da, db] (and [BH, S, da], [BH, S, db]).
    slot = bh.to(tl.int64) * n_splits + split
    ra = tl.arange(0, DA)
    rb = tl.arange(0, DB)
    tl.store(gram_ptr + slot * da * db + ra[:, None] * db + rb[None, :], gram,
             mask=(ra < da)[:, None] & (rb < db)[None, :])
    if WITH_NORMS:
        tl.store(a_sq_ptr + slot * da + ra, a_sq, mask=ra < da)
        tl.store(b_sq_ptr + slot * db + rb, b_sq, mask=rb < db)


@triton.jit
def _channel_attention_fwd_kernel(
    attn_ptr, v_ptr, out_ptr, dq, dk, N,
    DQ: tl.constexpr, DK: tl.constexpr, BLOCK_N: tl.constexpr, USE_DOT: tl.constexpr,
):
    bh = tl.program_id(0)
    n0 = tl.program_id(1) * BLOCK_N
    attn = _load_small(attn_ptr, bh, dq, dk, DQ, DK)
    v = _load_rows(v_ptr, bh, dk, N, n0, DK, BLOCK_N, attn.dtype)
    _store_rows(out_ptr, _matmul_rows(attn, v, USE_DOT), bh, dq, N, n0, DQ, BLOCK_N)


@triton.jit
def _channel_attention_bwd_kernel(
    q_ptr, k_ptr, go_ptr, attn_ptr, mq_ptr, cq_ptr, ck_ptr, gq_ptr, gk_ptr, gv_ptr, dq, dk, N,
    DQ: tl.constexpr, DK: tl.constexpr, BLOCK_N: tl.constexpr, USE_DOT: tl.constexpr,
):
    bh = tl.program_id(0)
    n0 = tl.program_id(1) * BLOCK_N
    mq = _load_small(mq_ptr, bh, dq, dk, DQ, DK)
    acc_ty = mq.dtype
    q = _load_rows(q_ptr, bh, dq, N, n0, DQ, BLOCK_N, acc_ty)
    k = _load_rows(k_ptr, bh, dk, N, n0, DK, BLOCK_N, acc_ty)
    rq = tl.arange(0, DQ)
    rk = tl.arange(0, DK)
    cq = tl.load(cq_ptr + bh.to(tl.int64) * dq + rq, mask=rq < dq, other=0.0)
    ck = tl.load(ck_ptr + bh.to(tl.int64) * dk + rk, mask=rk < dk, other=0.0)
    _store_rows(gq_ptr, _matmul_rows(mq, k, USE_DOT) + cq[:, None] * q, bh, dq, N, n0, DQ, BLOCK_N)
    _store_rows(gk_ptr, _matmul_t_rows(mq, q, USE_DOT) + ck[:, None] * k, bh, dk, N, n0, DK, BLOCK_N)
    attn = _load_small(attn_ptr, bh, dq, dk, DQ, DK)
    go = _load_rows(go_ptr, bh, dq, N, n0, DQ, BLOCK_N, acc_ty)
    _store_rows(gv_ptr, _matmul_t_rows(attn, go, USE_DOT), bh, dk, N, n0, DK, BLOCK_N)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tiling(d_a: int, d_b: int, dtype: torch.dtype) -> tuple[int, int, int, bool, int]:
    """(DA, DB, BLOCK_N, use_dot, num_warps) of a pass over [d_a, N] and [d_b, N] tiles."""
    DA, DB = triton.next_power_of_2(max(d_a, 1)), triton.next_power_of_2(max(d_b, 1))
    use_dot = min(DA, DB) >= 16 and dtype != torch.float64
    if use_dot:
        block_n = 64
    else:
        block_n = max(_MIN_BLOCK_N, min(_MAX_BLOCK_N, _PRODUCT_ELEMENTS // (DA * DB)))
    return DA, DB, block_n, use_dot, _NUM_WARPS_DOT if use_dot else _NUM_WARPS


def channel_attention_gram(a: torch.Tensor, b: torch.Tensor, with_norms: bool):
    """torch.ops.mcmri_fast.channel_attention_gram (csrc/channel_attention.h): (a bᵀ [BH, da, db],
    ‖a rows‖ [BH, da], ‖b rows‖ [BH, db]) in the accumulation dtype; the norms are empty tensors without
    with_norms."""
    BH, da, N = a.shape
    db = b.shape[1]
    acc = _accumulate_dtype(a.dtype)
    DA, DB, block_n, use_dot, num_warps = _tiling(da, db, a.dtype)
    n_tiles = triton.cdiv(N, block_n)
    n_splits = max(1, min(n_tiles, _MAX_SPLITS))
    tiles_per_split = triton.cdiv(n_tiles, n_splits)
    n_splits = triton.cdiv(n_tiles, tiles_per_split) if n_tiles else 1
    # Every slot is written: program (bh, s) stores its partial, zeros for a run past the last pixel.
    partial = torch.empty((BH, n_splits, da, db), dtype=acc, device=a.device)
    a_sq = torch.empty((BH, n_splits, da) if with_norms else (0,), dtype=acc, device=a.device)
    b_sq = torch.empty((BH, n_splits, db) if with_norms else (0,), dtype=acc, device=a.device)
    if BH and da and db:
        _channel_attention_gram_kernel[(BH, n_splits)](
            a, b, partial, a_sq if with_norms else partial, b_sq if with_norms else partial,
            da, db, N, tiles_per_split, n_splits,
            DA=DA, DB=DB, BLOCK_N=block_n, WITH_NORMS=with_norms, USE_DOT=use_dot, num_warps=num_warps,
        )
    g = partial.sum(dim=1)
    if not with_norms:
        return g, a_sq, b_sq
    return g, a_sq.sum(dim=1).sqrt(), b_sq.sum(dim=1).sqrt()


def channel_attention_apply(attn: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """torch.ops.mcmri_fast.channel_attention_apply (csrc/channel_attention.h): attn v [BH, dq, N] in v's
    dtype."""
    BH, dk, N = v.shape
    dq = attn.shape[1]
    out = v.new_empty((BH, dq, N))
    DQ, DK, block_n, use_dot, num_warps = _tiling(dq, dk, v.dtype)
    if out.numel():
        _channel_attention_fwd_kernel[(BH, triton.cdiv(N, block_n))](
            attn, v, out, dq, dk, N, DQ=DQ, DK=DK, BLOCK_N=block_n, USE_DOT=use_dot, num_warps=num_warps,
        )
    return out


def channel_attention_backward_pass(q, k, grad_out, attn, mq, dq, dk):
    """torch.ops.mcmri_fast.channel_attention_backward_pass (csrc/channel_attention.h): (gq, gk, gv) in
    q's dtype."""
    BH, d_q, N = q.shape
    d_k = k.shape[1]
    gq, gk, gv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(k)
    DQ, DK, block_n, use_dot, num_warps = _tiling(d_q, d_k, q.dtype)
    if BH and N and d_q and d_k:
        _channel_attention_bwd_kernel[(BH, triton.cdiv(N, block_n))](
            q, k, grad_out, attn, mq, dq, dk, gq, gk, gv, d_q, d_k, N,
            DQ=DQ, DK=DK, BLOCK_N=block_n, USE_DOT=use_dot, num_warps=num_warps,
        )
    return gq, gk, gv
