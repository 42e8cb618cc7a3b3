"""Predictions at data-set scale: kc.predict / predict_from_kernels, timed cold, side by side.

Inputs: points on the sphere |x|^2 = d (d = 10), target sin(x_1) + x_2 x_3 / d; kernel: the softplus
Neural ODE (T = 1); 8 times t = 1e-3 ... 1e3 and inf (our units: loss 1/2 ||f - y||^2).

1. N = 2000 train / 200 test, kernels computed once (timed), then mean + diagonal covariance (NTK-GP):
   - ``baseline``: a plain numpy implementation of neural-tangents' ``gradient_descent_mse_ensemble``
     formulas (``numpy.linalg.eigh``, then the einsums of its predict_fn), the side-by-side reference;
   - ``kernelcalc``: ``predict_from_kernels(..., method="eigh")``; their ratio and largest difference;
   - the crossover: the mean alone by the eigen-decomposition and by Lanczos (``method="krylov"``).
   neural-tangents itself is not importable with current jax (``from jax.core import Jaxpr`` fails
   from jax 0.6; the import error is printed), so no side-by-side against the real package.
2. N = 20000 train / 2000 test (``--large``; run in a subprocess whose peak RSS is read with
   ``resource.getrusage(RUSAGE_CHILDREN)``): kernels (NTK + NNGP, train and test), the mean at the
   8 times (``method="auto"``: Lanczos for finite t, one Cholesky factorisation for t = inf) and the
   mean + diagonal covariance at t = inf (``method="auto"``: Cholesky); total wall time, CPU time,
   peak RSS, Lanczos iterations, error estimates.
   The finite-t covariance at this size needs the full eigen-decomposition: its time is extrapolated
   from the N = 2000 eigh as N^3 (printed, not run).

The issue's target, ``--scaling 20000`` (kc.predict end to end at N = 20000, M = 2000, 8 times, NTK-GP mean +
diagonal covariance, in a fresh subprocess with its peak RSS), was NOT run: extrapolated it misses 10 min by
about 3x even on an idle machine (below).  Other modes: ``--scaling N1,N2`` (the same at smaller N, M = N/10,
with the extrapolation), ``--grams`` (the kernels alone at N, M), ``--crossover N1,N2`` (mean only: eigh
against Lanczos + Cholesky), ``--real-poles`` (the rational-approximation table).

Measured 2026-12-06 on the 2-core machine shared with other helpers (load average 8.4-11 during every run;
wall times are therefore 2-4x the CPU times):

- Default run (N = 2000, M = 200, side by side in one process): kernels 3.2 s; mean + diag cov at 8 times:
  the numpy neural-tangents baseline (``numpy.linalg.eigh``, two OpenBLAS threads) 15.75 s, kernelcalc 3.54 s
  (ratio 0.22), max |diff| mean 2.1e-11, cov 1.9e-14; mean only: eigh 2.68 s, Lanczos with CG at t = inf
  (``method="krylov"``, 642 iterations) 18.1 s, max |diff| 2.2e-11 (its error estimate, 5.4, is the loose
  first-order rounding term of CG at cond 7e7; ``method="auto"`` takes t = inf by Cholesky instead).
- Kernels at N = 20000, M = 2000 (``--grams``, cold): train Gram NTK + NNGP 100 s (55 tiles), test-train 14 s,
  test variances 2 s: 116 s wall, 34 s CPU (16 user + 18 system: filling 6.4 GB), peak RSS 7.14 GiB; error
  estimate 1.6e-11.
- Pipeline (``--scaling``), time split kernels / eigh / per-time products:

  | N, M | total | kernels | eigh | products | peak RSS | cond |
  |---|---|---|---|---|---|---|
  | 2000, 200 | 11.3 s | 3.9 s | 4.1 s | 3.4 s | 0.36 GiB | 7.0e7 |
  | 4000, 400 | 54.6 s | 7.5 s | 28.0 s (9.2 s CPU, 1 thread) | 19.1 s | 0.73 GiB | 5.7e8 |
  | 8000, 800 | 369.5 s | 21.7 s | 272.6 s | 75.2 s | 2.17 GiB | 2.8e9 |
  | 12000, 1200 | 1001.6 s (371 s CPU) | 36.3 s | 752.9 s (277.6 s CPU, 1 thread) | 212.4 s | 4.24 GiB | 8.0e9 |

  Before the LAPACK thread count followed the load (``spectral.lapack_threads``), the same N = 2000 / 4000 runs
  spent 32.8 s / 115.7 s in eigh (two OpenBLAS threads fighting for cores: 5x slower at N = 2000).
- Extrapolation to N = 20000, M = 2000 (eigh as N^3, products as N^2 M, kernels as pairs): 76 min from the
  N = 12000 run at this load (93 min from N = 8000).  Idle machine, from the N = 12000 CPU times: eigh
  277.6 s x (5/3)^3 = 21 min (single-threaded above N = 8000, ``spectral.SINGLE_THREAD_ABOVE``: the
  multi-threaded factorisation crashed after jax in the same process; two threads would give about 12 min:
  5.1 s at N = 4000 this morning), the per-time products about 80 s CPU x 4.6 = 6 min (17 U = 2.7e13 flops,
  U = 2 N^2 M), kernels 0.5-2 min (34 s CPU at N = 20000, measured): about 28 min, 3x the 10-min target.
  Peak RSS 4.24 GiB at N = 12000 (3 N^2 x 8 B = 3.5 GB of Grams and eigenvectors + 0.8 GB); projected
  10.6-11 GiB at N = 20000 (the NNGP and NTK Grams, the eigenvectors overwriting the NTK Gram that kc.predict
  owns, 128 MB blocks), within the 12 GB target but not measured there.
- Why the decomposition stays (``--real-poles``): phi_t over a condition number of 2e6 and t = 1e-3 ... 1e3
  with J real poles shared by all times (each one Cholesky factorisation + solves + one product with the
  NNGP): worst relative error 7.9e-1 (J = 4), 2.1e-1 (8), 1.4e-2 (16), 1.3e-4 (32); one repeated pole
  (shift-and-invert Krylov, one factorisation): 8.8e-1, 4.8e-1, 8.3e-2 at degrees 8, 16, 32.  Far from 1e-10,
  while 32 poles would already cost more than the decomposition.
- Crossover (``--crossover``, mean only, 8 times): Lanczos + Cholesky over eigh 1.09 (N = 1000), 1.18 (1500),
  0.84-0.88 (2000), 0.34 (4000), 127-142 iterations, max |diff| 1.4e-11 ... 7.2e-11; again with the
  truncation-bound stopping rule (113-127 iterations; an N = 12000 run shared the cores, load 10.8): 0.90
  (1500), 0.50 (2000), 0.22 (4000): ``engine.KRYLOV_CROSSOVER = 1500``.  With the rounding bounded through the
  Cholesky factor, the matrix-free error estimate at N = 2000 is 4.9e-6 (eigh: 4.8e-6; measured difference
  2.3e-11; 3.7e-2 before).

Earlier runs (the previous stop): N = 8000, M = 800 mean at 8 times (Lanczos 142 iterations + Cholesky at
inf) 59 s, mean + diag cov at t = inf 42 s, 2.29 GiB; N = 20000 with Lanczos + Cholesky for the mean: died in
multi-threaded ``potrf`` after jax (heap corruption), then single-threaded: 10.7 GB sampled, stopped after
14.7 min (load 6-7).

Run: ``python benchmarks/bench_predict.py [--large | --only-large] [--n N --m M]`` (default N = 20000,
M = 2000; every number is a cold first call), or one of the modes above.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np

TIMES = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0, np.inf]


def data(n, m, d=10, seed=0):
    from kernelcalc.data import sphere_normalise

    X = sphere_normalise(np.random.default_rng(seed).standard_normal((n + m, d)))
    y = np.sin(X[:n, 0]) + X[:n, 1] * X[:n, 2] / d
    return X[:n], y, X[n:]


def nt_style_numpy(Th, K, Th_tx, K_tx, k_tt, y, times):
    """neural-tangents' gradient_descent_mse_ensemble predict_fn, numpy, unnormalised time."""
    evals, evecs = np.linalg.eigh(Th)
    evals = evals[None]
    t = np.array(times)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_expm1 = np.where(np.isinf(t), -1.0 / np.abs(evals), np.expm1(-np.maximum(evals, 0) * t) / np.abs(evals))
    neg = -inv_expm1
    mean = np.einsum("lj,ji,ti,ki,k->tl", Th_tx, evecs, neg, evecs, y, optimize=True)
    out = []
    for i in range(len(times)):
        term_1 = evecs @ (neg[i][:, None] * (evecs.T @ Th_tx.T))          # (N, M)
        quad = np.einsum("nm,nm->m", term_1, K @ term_1)
        cross = np.einsum("nm,mn->m", term_1, K_tx)
        out.append(k_tt + quad - 2 * cross)
    return mean, np.array(out)


def small(n=2000, m=200):
    import kernelcalc as kc

    try:
        import neural_tangents  # noqa: F401
        nt = "importable (not used here: see the docstring)"
    except Exception as err:                     # noqa: BLE001 -- any import failure is the finding
        nt = f"not importable: {type(err).__name__}: {str(err).splitlines()[0][:120]}"
    print(f"neural-tangents: {nt}")
    Xtr, y, Xte = data(n, m)
    t0 = time.perf_counter()
    Ktr = kc.node_kernel(Xtr, activation="softplus", T=1.0, progress=False)
    Kte = kc.node_kernel(Xte, Xtr, activation="softplus", T=1.0, progress=False)
    Ktt = kc.node_kernel(Xte, activation="softplus", T=1.0, outputs=("nngp",), progress=False)
    tk = time.perf_counter() - t0
    print(f"N = {n}, M = {m}: kernels (NTK + NNGP, train, test-train, test diag) {tk:.1f} s cold "
          f"({tk / ((n * n / 2 + n * m) / 2000**2):.2f} s per 2000^2 pairs)")
    Th, K, Th_tx, K_tx, k_tt = (np.asarray(a) for a in (Ktr.ntk, Ktr.nngp, Kte.ntk, Kte.nngp, np.diag(Ktt.nngp)))
    t0 = time.perf_counter()
    mb, cb = nt_style_numpy(Th, K, Th_tx, K_tx, k_tt, y, TIMES)
    tb = time.perf_counter() - t0
    t0 = time.perf_counter()
    P = kc.predict_from_kernels(Th, y, Th_tx, nngp=(K, K_tx, k_tt), t=TIMES, compute_cov="diag", method="eigh")
    tc = time.perf_counter() - t0
    dm = float(np.max(np.abs(P.mean_test[..., 0] - mb)))
    fin = np.isfinite(np.array(TIMES))
    dc = float(np.max(np.abs(P.cov_test[fin] - cb[fin])))
    print(f"mean + diag cov, 8 times: baseline (numpy eigh, nt formulas) {tb:.2f} s, kernelcalc {tc:.2f} s, "
          f"ratio kernelcalc/baseline {tc / tb:.2f}; max |diff| mean {dm:.1e}, cov (finite t) {dc:.1e}; "
          f"baseline NaN at t=inf: {bool(np.isnan(cb[-1]).any())}; cond(Theta) = {P.info['condition_number']:.2e}, "
          f"kernelcalc error estimate mean {P.info['error_estimate']['mean']:.1e}")
    t0 = time.perf_counter()
    Pe = kc.predict_from_kernels(Th, y, Th_tx, t=TIMES, method="eigh")
    te = time.perf_counter() - t0
    t0 = time.perf_counter()
    Pk = kc.predict_from_kernels(Th, y, Th_tx, t=TIMES, method="krylov")
    tkr = time.perf_counter() - t0
    it = [r["iterations"] for r in Pk.info["lanczos"]]
    print(f"mean only, 8 times: eigh {te:.2f} s, Lanczos {tkr:.2f} s ({it} iterations), ratio {tkr / te:.2f}; "
          f"max |diff| {float(np.max(np.abs(Pe.mean_test - Pk.mean_test))):.1e} "
          f"(Lanczos error estimate {Pk.info['error_estimate']['mean']:.1e})")
    return te


def large(n=20000, m=2000):
    import kernelcalc as kc

    Xtr, y, Xte = data(n, m)
    t_all = time.perf_counter()
    Ktr = kc.node_kernel(Xtr, activation="softplus", T=1.0, progress=False)
    Kte = kc.node_kernel(Xte, Xtr, activation="softplus", T=1.0, progress=False)
    k_tt = np.concatenate([np.diag(kc.node_kernel(Xte[i:i + 500], activation="softplus", T=1.0, outputs=("nngp",),
                                                  progress=False).nngp) for i in range(0, m, 500)])
    tk = time.perf_counter() - t_all
    print(f"kernels {tk:.0f} s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    Pm = kc.predict_from_kernels(Ktr.ntk, y, Kte.ntk, t=TIMES, progress=False,
                                 kernel_error=float(Ktr.info["error_estimate"]))
    tm = time.perf_counter() - t0
    print(f"mean {tm:.0f} s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    Pc = kc.predict_from_kernels(Ktr.ntk, y, Kte.ntk, nngp=(Ktr.nngp, Kte.nngp, k_tt), t=None, compute_cov="diag",
                                 progress=False, kernel_error=float(Ktr.info["error_estimate"]))
    tc = time.perf_counter() - t0
    total = time.perf_counter() - t_all
    return {"n": n, "m": m, "kernel_seconds": tk, "mean_seconds": tm, "cov_inf_seconds": tc, "total_seconds": total,
            "mean_solver": Pm.info["solver"], "lanczos_iterations": [r["iterations"] for r in Pm.info["lanczos"]],
            "lanczos_converged": all(r["converged"] for r in Pm.info["lanczos"]),
            "mean_error_estimate": Pm.info["error_estimate"]["mean"], "cov_solver": Pc.info["solver"],
            "cov_error_estimate": Pc.info["error_estimate"].get("cov"), "cov_min": Pc.info.get("cov_min_eigenvalue"),
            "condition_number": Pc.info.get("condition_number"),
            "kernel_error_estimate": float(Ktr.info["error_estimate"])}


def pipeline(n, m):
    """kc.predict end to end (NTK-GP mean + diagonal covariance at the 8 times, method="auto"), with the time
    split: kernels (train NTK + NNGP, test-train, test diagonal), the eigen-decomposition, and the rest
    (the per-time products); this process's peak RSS (run it in a fresh subprocess)."""
    import kernelcalc as kc

    Xtr, y, Xte = data(n, m)
    t0, c0 = time.perf_counter(), time.process_time()
    P = kc.predict(Xtr, y, Xte, model="node", activation="softplus", T=1.0, t=TIMES, compute_cov="diag",
                   progress=False)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    info = P.info
    return {"n": n, "m": m, "total_seconds": total, "kernel_seconds": info["kernel_seconds"],
            "eigh_seconds": info.get("eigh_seconds"), "solver": info["solver"], "cpu_seconds": cpu,
            "eigh_cpu_seconds": info.get("eigh_cpu_seconds"), "lapack_threads": info.get("lapack_threads"),
            "prediction_seconds": total - info["kernel_seconds"],
            "products_seconds": total - info["kernel_seconds"] - (info.get("eigh_seconds") or 0.0),
            "mean_error_estimate": info["error_estimate"]["mean"], "cov_error_estimate": info["error_estimate"]["cov"],
            "condition_number": info.get("condition_number"),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def scaling(sizes):
    """``pipeline`` at each N (M = N / 10) in a fresh subprocess; the extrapolation to N = 20000, M = 2000:
    eigh as N^3, the per-time products as N^2 M, the kernels as N^2 + N M (pairs)."""
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--pipeline-child", "--n", str(n), "--m", str(n // 10)],
                             capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-2000:])
            raise SystemExit(out.returncode)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"N = {r['n']}, M = {r['m']}, 8 times, NTK-GP mean + diag cov: total {r['total_seconds']:.1f} s = kernels "
              f"{r['kernel_seconds']:.1f} s + eigh {r['eigh_seconds']:.1f} s + per-time products "
              f"{r['products_seconds']:.1f} s (CPU: total {r['cpu_seconds']:.1f} s, eigh {r['eigh_cpu_seconds']:.1f} s "
              f"on {r['lapack_threads']} LAPACK thread(s)); peak RSS {r['peak_rss_gib']:.2f} GiB; error estimates mean "
              f"{r['mean_error_estimate']:.1e}, cov {r['cov_error_estimate']:.1e}; cond {r['condition_number']:.1e}",
              flush=True)
    r = rows[-1]
    f3, f2 = (20000 / r["n"]) ** 3, (20000 / r["n"]) ** 2 * (2000 / r["m"])
    fk = (20000**2 / 2 + 20000 * 2000) / (r["n"] ** 2 / 2 + r["n"] * r["m"])
    print(f"extrapolated from N = {r['n']} to N = 20000, M = 2000: kernels {r['kernel_seconds'] * fk / 60:.1f} min, "
          f"eigh {r['eigh_seconds'] * f3 / 60:.1f} min, products {r['products_seconds'] * f2 / 60:.1f} min, total "
          f"{(r['kernel_seconds'] * fk + r['eigh_seconds'] * f3 + r['products_seconds'] * f2) / 60:.1f} min")


def crossover(sizes):
    """Mean only, 8 times, side by side on the same NTK Gram: the eigen-decomposition against the matrix-free
    path of ``method="auto"`` above the crossover (Lanczos for the finite times, one Cholesky factorisation at
    t = inf), each a first call on that Gram."""
    import kernelcalc as kc
    import kernelcalc.inference.engine as engine

    for n in sizes:
        m = n // 10
        Xtr, y, Xte = data(n, m, seed=n)
        t0 = time.perf_counter()
        Th = np.asarray(kc.node_kernel(Xtr, activation="softplus", T=1.0, outputs=("ntk",), progress=False).ntk)
        Tx = np.asarray(kc.node_kernel(Xte, Xtr, activation="softplus", T=1.0, outputs=("ntk",), progress=False).ntk)
        tk = time.perf_counter() - t0
        t0 = time.perf_counter()
        Pe = kc.predict_from_kernels(Th, y, Tx, t=TIMES, method="eigh", progress=False)
        te = time.perf_counter() - t0
        saved, engine.KRYLOV_CROSSOVER = engine.KRYLOV_CROSSOVER, 0
        try:
            t0 = time.perf_counter()
            Pk = kc.predict_from_kernels(Th, y, Tx, t=TIMES, progress=False)
            tkr = time.perf_counter() - t0
        finally:
            engine.KRYLOV_CROSSOVER = saved
        it = [r["iterations"] for r in Pk.info["lanczos"]]
        print(f"crossover N = {n}: kernels {tk:.1f} s; mean at 8 times: eigh {te:.2f} s, Lanczos + Cholesky "
              f"{tkr:.2f} s ({it} iterations), ratio krylov/eigh {tkr / te:.2f}; max |diff| "
              f"{float(np.max(np.abs(Pe.mean_test - Pk.mean_test))):.1e} (estimates: eigh "
              f"{Pe.info['error_estimate']['mean']:.1e}, krylov {Pk.info['error_estimate']['mean']:.1e})", flush=True)


def real_pole_fit(lam_min=1e-2, lam_max=2e4):
    """Why no shared-real-pole rational method: phi_t(lam) = (1 - exp(-t lam)) / lam on [lam_min, lam_max]
    (condition 2e6, the t of TIMES) by a constant plus J terms c_j(t) / (lam + g_j) with J poles shared by all
    times (log-spaced over the interval, weighted least squares on 4000 log-spaced points): the worst relative
    error.  Each pole costs one N x N Cholesky factorisation plus its solves and one N x N x M product."""
    lam = np.geomspace(lam_min, lam_max, 4000)
    out = []
    for J in (4, 8, 16, 32):
        g = np.geomspace(lam_min / 10, lam_max * 10, J)
        basis = np.column_stack([1 / (lam[:, None] + g[None, :]), np.ones_like(lam)])
        worst = 0.0
        for t in TIMES[:-1]:
            f = -np.expm1(-lam * t) / lam
            c, *_ = np.linalg.lstsq(basis / f[:, None], np.ones_like(f), rcond=None)
            worst = max(worst, float(np.max(np.abs(basis @ c - f) / f)))
        out.append((J, worst))
    print("shared real poles, worst relative error of phi_t over the 7 finite times: "
          + ", ".join(f"J = {J}: {e:.1e}" for J, e in out))
    # one repeated pole (shift-and-invert Krylov with one Cholesky factorisation of A + g I): polynomials of
    # degree m in s = 1 / (lam + g), the best of 9 shifts g; each degree is one pair of triangular solves
    out = []
    for m in (8, 16, 32):
        best = np.inf
        for g in np.geomspace(lam_min, lam_max, 9):
            sv = 1.0 / (lam + g)
            x = 2 * (sv - sv.min()) / (sv.max() - sv.min()) - 1
            basis = np.polynomial.chebyshev.chebvander(x, m)
            worst = 0.0
            for t in TIMES[:-1]:
                f = -np.expm1(-lam * t) / lam
                c, *_ = np.linalg.lstsq(basis / f[:, None], np.ones_like(f), rcond=None)
                worst = max(worst, float(np.max(np.abs(basis @ c - f) / f)))
            best = min(best, worst)
        out.append((m, best))
    print("one repeated real pole (shift-and-invert), worst relative error: "
          + ", ".join(f"degree {m}: {e:.1e}" for m, e in out))


def grams(n, m):
    """The kernels alone (what kc.predict computes before the prediction), cold, in this process: the train Gram
    (NTK + NNGP, tiled), the test-train Grams (NTK + NNGP) and the test variances (diagonal NNGP blocks of 500)."""
    import kernelcalc as kc

    Xtr, y, Xte = data(n, m)
    t0 = time.perf_counter()
    Ktr = kc.node_kernel(Xtr, activation="softplus", T=1.0, progress=False)
    t1 = time.perf_counter()
    Kte = kc.node_kernel(Xte, Xtr, activation="softplus", T=1.0, progress=False)
    t2 = time.perf_counter()
    k_tt = np.concatenate([np.diag(kc.node_kernel(Xte[i:i + 500], activation="softplus", T=1.0, outputs=("nngp",),
                                                  progress=False).nngp) for i in range(0, m, 500)])
    t3 = time.perf_counter()
    return {"n": n, "m": m, "train_seconds": t1 - t0, "test_train_seconds": t2 - t1, "test_diag_seconds": t3 - t2,
            "tiles": Ktr.info.get("tiles"), "error_estimate": float(Ktr.info["error_estimate"]),
            "finite": bool(np.isfinite(Ktr.ntk).all() and np.isfinite(Kte.ntk).all() and np.isfinite(k_tt).all()),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def _arg(name, default):
    return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default


def main():
    n, m = _arg("--n", 20000), _arg("--m", 2000)
    if "--pipeline-child" in sys.argv:
        print(json.dumps(pipeline(n, m)))
        return
    if "--grams" in sys.argv:
        t0 = time.perf_counter()
        r = grams(n, m)
        print(f"kernels at N = {n}, M = {m} (cold): train Gram NTK + NNGP {r['train_seconds']:.0f} s "
              f"({r['tiles']} tiles), test-train {r['test_train_seconds']:.0f} s, test variances "
              f"{r['test_diag_seconds']:.0f} s; error estimate {r['error_estimate']:.1e}, finite {r['finite']}; "
              f"peak RSS {r['peak_rss_gib']:.2f} GiB; wall {time.perf_counter() - t0:.0f} s")
        return
    if "--real-poles" in sys.argv:
        real_pole_fit()
        return
    if "--crossover" in sys.argv:
        crossover([int(v) for v in sys.argv[sys.argv.index("--crossover") + 1].split(",")])
        return
    if "--scaling" in sys.argv:
        scaling([int(v) for v in sys.argv[sys.argv.index("--scaling") + 1].split(",")])
        return
    if "--child" in sys.argv:
        print(json.dumps(large(n, m)))
        return
    t_eigh = small() if "--only-large" not in sys.argv else float("nan")
    if "--large" not in sys.argv and "--only-large" not in sys.argv:
        print("(--large: the N = 20000 run)")
        return
    if t_eigh == t_eigh:
        print(f"extrapolated eigh at N = {n} (N^3 from this run's N = 2000 eigh path, mean only): "
              f"{t_eigh * (n / 2000) ** 3 / 60:.0f} min -- the finite-t covariance at that size is not run")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--child", "--n", str(n), "--m", str(m)], capture_output=True,
                         text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        print(out.stderr[-3000:])
        raise SystemExit(out.returncode)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss = ru.ru_maxrss / 1024**2                                                    # KiB -> GiB
    cpu = ru.ru_utime + ru.ru_stime
    print(f"N = {res['n']}, M = {res['m']}: kernels {res['kernel_seconds']:.0f} s, mean at 8 times "
          f"{res['mean_seconds']:.0f} s ({res['mean_solver']}, iterations {res['lanczos_iterations']}, converged "
          f"{res['lanczos_converged']}, error estimate {res['mean_error_estimate']:.1e}), mean + diag cov at t = inf "
          f"{res['cov_inf_seconds']:.0f} s ({res['cov_solver']}, error estimate {res['cov_error_estimate']:.1e}, "
          f"min variance {res['cov_min']:.2e}, cond {res['condition_number']:.1e}); total {res['total_seconds']:.0f} s "
          f"(process wall {wall:.0f} s, CPU {cpu:.0f} s: on a machine shared by other jobs, CPU / 2 cores is the "
          f"uncontended lower bound of the wall time), peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
    main()
