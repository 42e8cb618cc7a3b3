"""Audit (issue 17, part 3): every built-in activation at sigma_w*T in {10, 20, 40} (sigma_w = 1), N = 3 on the sphere.

``python benchmarks/audit_horizons.py [TIMEOUT_S] [ACTIVATION ...]``: each case in a fresh process under a wall-clock
timeout (cold: imports and jit included), one line per case (with the child's CPU seconds and the load average): computes (seconds, error estimate relative to max |NTK|,
whether an accuracy warning was issued, and whether an estimate above 10 tol came without one), refused (seconds to the
refusal, its first words) or timed out (a defect: the cost guard should refuse it quickly).
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
