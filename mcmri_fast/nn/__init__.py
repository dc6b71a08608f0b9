"""Modules built on mcmri_fast.ops, reused by the models."""
from .attention import ChannelAttention
from .blocks import Conv3x3, ConvPReLU, DownSample, PReLU, ResBlock, ResidualGroup, UpSample
from .frequency import FreqBlock
from .fusion import CMSFusion, FSFusion
from .unfolding import CSCA, IMAStage, OperatorNet

__all__ = [
    "CMSFusion", "CSCA", "ChannelAttention", "Conv3x3", "ConvPReLU", "DownSample", "FSFusion", "FreqBlock", "IMAStage",
    "OperatorNet", "PReLU", "ResBlock", "ResidualGroup", "UpSample",
]
