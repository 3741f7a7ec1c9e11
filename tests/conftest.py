"""Shared test set-up.

* Triton kernels run on the CPU through the interpreter, so set TRITON_INTERPRET=1 before any
  Triton import when there is no CUDA; every load and store a kernel makes there is checked
  against its tensor arguments' storage (bounds_check.py), which the interpreter does not do.
* Tests marked ``gpu`` skip where CUDA is absent (run them on the GPU machine:
  ``python -m pytest -m gpu``).
"""
import os

import pytest

try:
    import torch
    _HAS_CUDA = torch.cuda.is_available()
except Exception:  # pragma: no cover
    _HAS_CUDA = False

if not _HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
    if os.environ["TRITON_INTERPRET"] == "1":
        import bounds_check
        bounds_check.install()


def pytest_collection_modifyitems(config, items):
    if _HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs CUDA: GPU test, run on the GPU machine with -m gpu")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Fixed seed; one intra-op thread: the tiny test models gain nothing from threads, and on a
    busy 2-core machine the thread pool spins (measured 10-100x slower with 2 threads)."""
    import torch
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session (tests/postgres_server.py). Where it cannot start,
    CI fails loudly; elsewhere the tests that need it skip, saying why."""
    import postgres_server as pg
    try:
        server = pg.start()
    except pg.PostgresUnavailable as e:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not be started in CI: {e}", pytrace=False)
        pytest.skip(f"PostgreSQL could not be started: {e}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database on the session's server, one per test."""
    import re
    import uuid
    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:8]
    return postgres_server.create_database(name)
