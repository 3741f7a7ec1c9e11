"""rmsnorm_gated: reference.py (torch) beside fused.py (Triton)."""
