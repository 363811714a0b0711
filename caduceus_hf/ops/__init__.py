"""Numerical kernels behind the model: the selective scan (with backends), the short convolution, the norms."""

from .conv import short_conv_silu
from .norm import RMSNorm, norm
from .scan import selective_scan

__all__ = ["RMSNorm", "norm", "selective_scan", "short_conv_silu"]
