"""Scripts for the GPU machine; run each from the repository root as
``python3 -m benchmarks.gpu.<name>`` (the shell scripts as ``bash benchmarks/gpu/<name>.sh``)."""
