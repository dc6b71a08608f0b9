"""Pure-PyTorch references of every op: the single source of truth for what an op computes."""
from .batch_norm import batch_norm_relu
from .channel_attention import channel_attention, depthwise_channel_attention
from .conv1x1 import conv1x1
from .conv3x3 import conv3x3
from .data_consistency import data_consistency
from .dcm import dcm_data_consistency
from .depthwise_conv import depthwise_conv3x3
from .downsample import unshuffle_downsample
from .frequency import frequency_epilogue, polar_to_spectrum, spectrum_to_polar
from .gated_fusion import gated_fusion
from .guided_attention import guided_attention
from .instance_norm import instance_norm_leaky_relu
from .prelu import prelu
from .warp import warp

__all__ = [
    "batch_norm_relu",
    "channel_attention",
    "conv1x1",
    "conv3x3",
    "data_consistency",
    "dcm_data_consistency",
    "depthwise_channel_attention",
    "depthwise_conv3x3",
    "frequency_epilogue",
    "gated_fusion",
    "guided_attention",
    "instance_norm_leaky_relu",
    "polar_to_spectrum",
    "prelu",
    "spectrum_to_polar",
    "unshuffle_downsample",
    "warp",
]
