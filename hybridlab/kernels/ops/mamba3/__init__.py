"""mamba3: reference.py (torch) beside fused.py (Triton)."""
