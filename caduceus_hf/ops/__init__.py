"""Numerical kernels behind the model, tensors in and tensors out: the selective scan and the short convolution
(a PyTorch reference each, fast CPU kernels, mamba-ssm / causal-conv1d CUDA kernels) and the norms. Which one runs is
decided in `caduceus_hf.backends`. Beside them, the CPU settings they run under: `precision` (whether bf16 products
pay on this CPU) and `allocator` (freed memory kept for reuse)."""

from .conv import short_conv_silu
from .norm import RMSNorm, norm
from .scan_reference import selective_scan_reference

__all__ = ["RMSNorm", "norm", "selective_scan_reference", "short_conv_silu"]
