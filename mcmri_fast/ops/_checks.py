"""Argument checks shared by the ops' public functions."""
import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def promoted_float_dtype(tensors: dict, like: str = "x") -> torch.dtype:
    """Checks that every value of `tensors` (name → tensor) is a float16/bfloat16/float32/float64 tensor on
    the device of tensors[like]; returns their promoted dtype. Raises TypeError / ValueError naming the
    argument."""
    device = tensors[like].device if isinstance(tensors[like], torch.Tensor) else None
    dtype = None
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got dtype {t.dtype}")
        if t.device != device:
            raise ValueError(f"{name} must be on {like}'s device {device}, got {t.device}")
        dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return dtype


def canonical_mask(mask: torch.Tensor, B: int, H: int, W: int, name: str = "mask") -> torch.Tensor:
    """A sampling mask as the k-space ops take it: [W] (columns), [H, W], [B, W] or [B, 1, H, W] →
    bool [Bm, Hm, W] (Bm in {1, B}, Hm in {1, H}; Hm == 1 for column masks). A non-bool mask must hold
    only 0 and 1 (checked, except under torch.compile)."""
    if mask.is_complex():
        raise TypeError(f"{name} must be a bool or real tensor of 0/1 values, got dtype {mask.dtype}")
    shape = tuple(mask.shape)
    if shape == (W,):
        canonical = mask.reshape(1, 1, W)
    elif shape == (H, W):
        canonical = mask.reshape(1, H, W)
    elif shape == (B, W):
        canonical = mask.reshape(B, 1, W)
    elif shape == (B, 1, H, W):
        canonical = mask.reshape(B, H, W)
    else:
        raise ValueError(
            f"{name} must be [W], [H, W], [B, W] or [B, 1, H, W] with B={B}, H={H}, W={W}, got shape {shape}"
        )
    if mask.dtype == torch.bool:
        return canonical
    if not torch.compiler.is_compiling() and bool(((canonical != 0) & (canonical != 1)).any()):
        raise ValueError(f"{name} must be binary (only 0 and 1), got other values")
    return canonical != 0
