"""causal_conv1d: reference.py (torch) beside fused.py (Triton)."""
