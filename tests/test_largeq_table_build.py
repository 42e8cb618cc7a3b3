"""The large-q rule's table builds (largeq_remainder.table_build): phi's and phi''s tables built together on two threads
inside one BLAS-thread limit, each once per process, and the process's BLAS threads as they were afterwards."""

import threading

import numpy as np
import pytest

from kernelcalc.theory.largeq_remainder import table_build

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads():
    return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")


def test_pair_built_once_on_two_threads_with_one_blas_thread_each():
    np.ones((4, 4)) @ np.ones((4, 4))          # numpy's BLAS loaded
    before = _blas_threads()
    calls = []

    @table_build
    def toy(key, derivative):
        calls.append((key, derivative, threading.get_ident(), _blas_threads()))
        return ("table", key, derivative)

    assert toy("a", True) == ("table", "a", True)
    assert toy("a", False) == ("table", "a", False)
    assert toy("a", True) == ("table", "a", True)
    assert sorted(c[:2] for c in calls) == [("a", False), ("a", True)]      # both at the first request, once each
    assert len({c[2] for c in calls}) == 2                                   # on two threads
    assert all(set(c[3]) <= {1} for c in calls)                             # one BLAS thread inside
    assert _blas_threads() == before                                         # and the limit left as it was


def test_a_failing_build_raises_and_leaves_blas_threads():
    before = _blas_threads()

    @table_build
    def bad(key, derivative):
        if derivative:
            raise ValueError("no table")
        return key

    with pytest.raises(ValueError, match="no table"):
        bad("b", False)
    assert _blas_threads() == before
