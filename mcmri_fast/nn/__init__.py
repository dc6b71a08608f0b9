"""Modules built on mcmri_fast.ops, reused by the models."""
from .attention import ChannelAttention
from .blocks import ConvPReLU, DownSample, PReLU, ResBlock, ResidualGroup, UpSample
from .frequency import FreqBlock
from .fusion import CMSFusion, FSFusion

__all__ = ["CMSFusion", "ChannelAttention", "ConvPReLU", "DownSample", "FSFusion", "FreqBlock", "PReLU", "ResBlock", "ResidualGroup", "UpSample"]
