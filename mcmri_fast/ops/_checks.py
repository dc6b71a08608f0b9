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
