"""selective_scan: reference.py (torch) beside fused.py (Triton)."""
