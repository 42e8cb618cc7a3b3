"""Audit (issue 17, part 3): every built-in activation at sigma_w*T in {10, 20, 40} (sigma_w = 1), N = 3 on the sphere.

``python benchmarks/audit_horizons.py [TIMEOUT_S] [ACTIVATION ...]``: each case in a fresh process under a wall-clock
timeout (cold: imports and jit included), one line per case (with the child's CPU seconds and the load average): computes (seconds, error estimate relative to max |NTK|,
whether an accuracy warning was issued, and whether an estimate above 10 tol came without one), refused (seconds to the
refusal, its first words) or timed out (a defect: the cost guard should refuse it quickly).

Measured 2026-12-06 15:52-16:36 (guard branch, load average 9-12 on the 2-core machine: wall s / CPU s of the child;
the relative error estimate; "warns": an accuracy warning was issued)::

    activation  sigma_w T = 10                 20                             40
    relu        2.8/1.1   1.1e-12              10.6/2.3  4.6e-12              36.4/8.8  1.6e-11
    leaky_relu  2.8/1.1   1.1e-12              10.5/2.3  4.6e-12              41.1/8.9  1.6e-11
    abs(x)      5.1/1.2   1.2e-12              11.0/2.4  3.5e-11              74.0/12.5 5.6e-12
    elu         67.3/8.3  4.5e-11              refused 111.5/18.5 (1.04e10)   refused 65.2/15.3 (1.02e10)
    gelu        14.4/2.3  9.9e-11              65.4/8.1  1.2e-10 warns        53.6/7.4  6.4e-11
    softplus    refused 259.8/51.3             refused 92.4/44.4              refused 34.2/12.8
    silu        refused 173.9/58.7             refused 168.9/43.2             refused 42.9/13.6
    tanh        10.4/6.1  1.1e-9 warns         44.5/27.6 2.2e-9 warns         refused 14.2/11.0
    sigmoid     2.4/2.5   1.1e-9 warns         7.3/6.4   2.1e-9 warns         refused 16.6/8.4
    erf         5.4/1.1   5.4e-11              26.6/5.8  4.9e-12              25.4/7.0  7.4e-11
    sin         5.5/1.1   1.3e-11              86.6/18.9 3.9e-9 warns         out of reach 96.5/13.8 (sweeps diverge)
    cos         4.5/1.1   8.0e-11              78.6/20.3 2.9e-8 warns         out of reach 17.0/3.4 (sweeps diverge)
    identity    3.8/0.8   1.1e-12              19.7/6.2  2.2e-12              62.1/16.9 4.5e-12
    quadratic   blows up 9.9/2.4               blows up 7.5/2.5               blows up 14.7/3.6

elu at sigma_w T = 20 with the guard lifted (``benchmarks/probe_panel_cost.py elu 20 1 3 1e11``): 59.3 s of CPU (490 s
wall), degree 32 with a warning (1.9e-10); the guard predicted 62 s (1.04e10 operations) and refuses it.  Before the
guard's recalibration elu at 20 and 40, softplus and silu ran past 75 s of wall time at load 5-10 without finishing.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

ACTIVATIONS = ("relu", "leaky_relu", "abs(x)", "elu", "gelu", "softplus", "silu", "tanh", "sigmoid", "erf", "sin",
               "cos", "identity", "quadratic")
CASE = r"""
import json, math, time, warnings
import numpy as np
t0 = time.perf_counter()
import kernelcalc as kc
rng = np.random.default_rng(0)
x = rng.standard_normal((3, 10)); x *= math.sqrt(10) / np.linalg.norm(x, axis=1, keepdims=True)
out = {}
try:
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        K = kc.node_kernel(x, activation=%r, T=%r)
    err = float(K.info["error_estimate"]) / float(np.max(np.abs(K.ntk)))
    warned = any(issubclass(w.category, kc.KernelcalcAccuracyWarning) for w in rec)
    out = dict(outcome="computes", error=err, warned=warned, silent_miss=bool(err > 1e-9 and not warned))
except kc.KernelcalcInputError as e:
    out = dict(outcome="refused", message=str(e)[:160])
out["seconds"] = round(time.perf_counter() - t0, 1)
print(json.dumps(out))
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(activation: str, T: float, timeout: float, cpu_limit: float = 120.0) -> dict:
    """One case in a fresh process: its outcome, wall ``seconds`` and ``cpu_s`` (the child's CPU time: the machine is
    shared, so the wall time of a loaded box overstates the work several times)."""
    t0, c0 = time.perf_counter(), _children_cpu()
    p = subprocess.Popen([sys.executable, "-c", CASE % (activation, T)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, preexec_fn=lambda: resource.setrlimit(
                             resource.RLIMIT_CPU, (int(cpu_limit), int(cpu_limit) + 5)))
    try:
        out, err = p.communicate(timeout=timeout)
        line = out.strip().splitlines()[-1] if out.strip() else ""
        if line.startswith("{"):
            res = json.loads(line)
        elif p.returncode in (-24, 152, -9):     # SIGXCPU: past the CPU limit
            res = dict(outcome=f"cpu limit ({cpu_limit:g} s)", seconds=round(time.perf_counter() - t0, 1))
        else:
            res = dict(outcome="failed", message=err[-300:])
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        res = dict(outcome="timeout", seconds=round(time.perf_counter() - t0, 1))
    res["cpu_s"] = round(_children_cpu() - c0, 1)
    return dict(activation=activation, sigma_w_T=T, load=round(os.getloadavg()[0], 1), **res)


if __name__ == "__main__":
    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else 900.0     # wall seconds; the CPU limit is 120 s
    acts = sys.argv[2:] or ACTIVATIONS
    for a in acts:
        for T in (10.0, 20.0, 40.0):
            print(json.dumps(run(a, T, timeout)), flush=True)
