"""Complex images as real channels: the layout that real-valued networks (the baselines' U-Net on complex
images, DUN-SA) and real-valued kernels (`ops.warp` on complex images) use, written once."""
import torch

__all__ = ["channels_to_complex", "complex_to_channels"]


def complex_to_channels(image: torch.Tensor) -> torch.Tensor:
    """Complex [B, C, H, W] -> real [B, 2C, H, W], channels (real, imaginary) of each complex channel."""
    if not image.is_complex() or image.dim() != 4:
        raise ValueError(f"image must be a complex [B, C, H, W] tensor, got {image.dtype} {tuple(image.shape)}")
    B, C, H, W = image.shape
    return torch.view_as_real(image).permute(0, 1, 4, 2, 3).reshape(B, 2 * C, H, W)


def channels_to_complex(channels: torch.Tensor) -> torch.Tensor:
    """Real [B, 2C, H, W] (real, imaginary pairs) -> complex [B, C, H, W]; complex64 from half
    precision (autocast), since torch has no complex half tensors to speak of."""
    if channels.is_complex() or channels.dim() != 4 or channels.shape[1] % 2:
        raise ValueError(f"channels must be a real [B, 2C, H, W] tensor, got {channels.dtype} {tuple(channels.shape)}")
    B, C2, H, W = channels.shape
    if channels.dtype not in (torch.float32, torch.float64):
        channels = channels.float()
    pairs = channels.reshape(B, C2 // 2, 2, H, W).permute(0, 1, 3, 4, 2).contiguous()
    return torch.view_as_complex(pairs)
