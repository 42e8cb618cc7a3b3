"""Test-session settings: the CLI's persistent jax compilation cache stays off in tests, so CliRunner
runs neither write to the user's cache folder nor change this process's jax configuration.

The suite runs as a float32 user: ``import kernelcalc`` leaves ``jax_enable_x64`` off, so every
kernelcalc function must compute in float64 by itself (tests/test_x64.py pins that).  A test that
builds its own jax arrays or transformations turns float64 on for itself (the :func:`x64` fixture,
or ``@jax.enable_x64(True)`` on its helper).
"""

import os

import pytest

os.environ.setdefault("KERNELCALC_JAX_CACHE", "0")

# Imported here, in every process that loads this file, the xdist controller included: the controller imports the
# module of each warning class a worker reports (kernelcalc.theory.assumptions.Assumption1Warning, ...) to rebuild the
# warning, and an import of kernelcalc begun there, in the middle of its event loop, once failed as a "partially
# initialized module" and took a worker down.  kernelcalc's import has no side effects (tests/test_x64.py).
import kernelcalc  # noqa: E402,F401


@pytest.fixture
def x64():
    """Run the test inside ``jax.enable_x64(True)`` (scoped to this test)."""
    import jax

    with jax.enable_x64(True):
        yield


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, the default run), the tests of a module that shares an
    expensive module-scoped fixture (a dask cluster, trained ensembles, subprocess runs) go to one worker, so the
    fixture is built once; every other test is distributed by load."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        if any(fd.scope == "module" for defs in info.name2fixturedefs.values() for fd in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
