"""Modules built on mcmri_fast.ops, reused by the models."""
from .alignment import CompactUNet, DUNSAStage, SpatialAlignment
from .attention import ChannelAttention
from .blocks import Conv3x3, ConvPReLU, DownSample, InstanceNormLeakyReLU, PReLU, ResBlock, ResidualGroup, UpSample
from .dense import ConvBatchNormReLU, DenseBlock, DenseUNetPair, GuidedAttention, UpBlock
from .frequency import FreqBlock
from .fusion import CMSFusion, FSFusion
from .unfolding import CSCA, IMAStage, OperatorNet

__all__ = [
    "CMSFusion", "CSCA", "ChannelAttention", "CompactUNet", "Conv3x3", "ConvBatchNormReLU", "ConvPReLU", "DUNSAStage",
    "DenseBlock", "DenseUNetPair", "DownSample", "FSFusion", "FreqBlock", "GuidedAttention", "IMAStage",
    "InstanceNormLeakyReLU", "OperatorNet", "PReLU", "ResBlock", "ResidualGroup", "SpatialAlignment", "UpBlock", "UpSample",
]
