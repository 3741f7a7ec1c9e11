"""Kernel implementations, one folder per op: reference.py (torch) beside fused.py (Triton)."""
