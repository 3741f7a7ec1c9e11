"""ssd: reference.py (torch) beside fused.py (Triton)."""
