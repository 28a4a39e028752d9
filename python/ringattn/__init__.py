"""ringattn: distributed dilated (LongNet) ring attention.

`ringattn.torch` is the PyTorch op (`DilatedAttention`, `dilated_attention`);
this module holds what does not need torch: the runtime's version, its errors,
MPI's life cycle and the cache of communicators and contexts.
"""
from ._errors import RingattnError, RingattnTypeError, RingattnValueError
from ._runtime import clear_cache, named_branches, version

__all__ = ["RingattnError", "RingattnTypeError", "RingattnValueError", "clear_cache", "named_branches", "version"]
