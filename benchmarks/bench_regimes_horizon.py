"""Long horizons (issue 17, part 3): the sigma_w*T = 10 table for every built-in activation.

For each built-in: ``node_kernel`` on N = 200 points on the sphere (d = 10, sigma_u = sigma_v = 1, default
tol), at T = 1 and at T = 10 (sigma_w = 1), each in a FRESH process (cold: the first call on data the process
has not seen, jit compilation and imports included; nothing memoised), side by side in one run.  Prints and
returns one dict per activation: the two wall times, their ratio (target <= 10), the error estimate at T = 10
relative to max|NTK| (target <= 1e-9), the expectation rule and q(T), or the refusal / failure text (the
quadratic activation blows up in finite time: a clear refusal is the right answer there).

Measured 2026-12-06 (horizon branch, busy 2-core machine, load average 8-10: cold wall times, noisy)::

    activation  T=1 s  T=10 s  ratio  err T=10  rule / outcome
    sigmoid       6.6    46.8    7.0   7.3e-11  Mehler/Hermite series, 4400 terms, q(T) = 36.6
    erf           1.0     6.9    6.6   1.0e-10  closed form, q(T) = 60.4
    identity      0.6     0.8    1.3   8.5e-12  closed form, q(T) = 4.36e+07
    sin           0.8    12.7   16.2   9.8e-11  closed form, q(T) = 18.1 (65 time nodes, 513 theta nodes, 29 sweeps)
    cos           1.0    15.0   14.4   1.2e-10  closed form, q(T) = 18.4
    tanh, softplus, silu, elu: refused by the cost guard (2.8e10, 1.1e11, 1.3e11, 3.6e10 estimated operations:
        65 pairs x 40 sweeps x 561 cells x 19159 / 74793 / 90368 / 24576 points per expectation; the
        asymptotic rule costs ~1.8 ms per (C, Cdot) on this machine)
    quadratic: blows up in finite time (the right refusal); relu, leaky_relu: refused (513 time nodes, the
        kink on t = s); gelu: time grid does not converge (513 nodes, change 1.6e-8: the same diagonal
        near-kink at q ~ 1e5), > 200 s

Measured 2026-12-06 11:00-11:15 after the composite collapsed-triangle panels (``kernels/_panels.py``: kinked
activations, and gelu, past sigma_w*T = 3), same machine, load average 8-11 (both columns in the same run)::

    activation  T=1 s  T=10 s  ratio  err T=10  rule / outcome
    relu         10.6    86.1    8.1   2.0e-10  closed form, q(T) = 2.09e5, 10 panels, 1025 theta nodes
    gelu          5.3    55.1   10.3   2.5e-10  closed form, q(T) = 1.64e5 (was: the tensor grid did not converge)
    leaky_relu    9.3    78.7    8.4   1.6e-10  closed form, q(T) = 2.08e5
    elu          95.9  refused  the polar rule's angle tables: 2.1e10 estimated operations (elu's closed form is
                                the kinks helper's)

After merging the kinks branch (elu closed form; near-parallel pairs in deficit form on the one-element grid),
11:46-11:53, load average 1.3-5::

    relu          1.5    20.6   13.4   2.0e-10  (T = 1 is 7x faster after the merge; T = 10 still samples 1025
                                                 theta nodes: near-parallel pairs on the panels are solved directly,
                                                 and their ~1e-9 noise at theta_0 < 1e-3 keeps the theta table from
                                                 converging; the deficit form on the panels is the next step)
    elu          13.2  > 400                    timeout (the closed form costs ~1 ms per 10^4 nodes; 55 cells)

With the deficit form on the panels too (near-parallel pairs of a homogeneous kink), 11:55, load average 2::

    relu          1.5    12.9    8.4   5.5e-11  257 theta nodes (was 1025)
    leaky_relu    6.4    15.0    2.3   5.5e-11
    gelu          0.9    16.5   18.7   2.5e-10  not homogeneous: no deficit form, the theta table still needs
                                                ~1025 nodes (near-parallel noise), over the 10x target

elu after its Mills ratios became few-node Gauss rules from the whitened distances (``bivariate_mills_whitened``;
was: a graded 384-point quadrature and a 64-step bisection per ratio, > 400 s), eluhorizon branch, 13:25-13:50,
load average 8-10 (both columns of a row in the same run)::

    elu          11.8   592.7   50.1   1.0e-10  closed form, q(T) = 2.32e5 (whitened Mills ratios; 2.2 us/evaluation)
    elu          12.3   512.3   41.5   1.0e-10  + anchored Picard sweeps (exact (C, Cdot) at a few anchors, Price's
                                                linear model between: kernels/_anchored.py; re-anchored at step 1e-4)
    elu           9.9   154.1   15.6   1.0e-10  + re-anchored when the step falls below the model's own error
                                                (Newton-chord: 4-6 exact evaluations per row site, plain Picard 42)
    elu          12.3   161.2   13.1   1.0e-10  + 8/10-node tabulated rules where alpha is large (14:07-14:11, load
                                                10 -> 7); 257 theta nodes, band degrees 20/16/20
    elu           4.7    67.0   14.2   1.0e-10  + theta0 = 0 pairs reuse the self-kernel solve (14:18-14:20, load 3-5)
    elu           8.1    97.2   12.0   1.0e-10  the same, rerun at 14:20-14:22, load 4-6
    (N = 3: 104 s -> 6 s at T = 5.  N = 200, T = 10 profiled at load ~8 before the Newton-chord anchors: 251 s, 219 s
    of it in the dual, 58e6 exact evaluations (16e6 of them in the self-kernel and theta = 0 solves, whose diagonal
    q iterates with S, so that a model in c alone does not apply) against 119e6 linear ones.  Target (10x) missed:
    12-16x; the dual still costs ~1-2 us per exact evaluation (three Mills ratios of 4-12 erfcx nodes).)

The sin/cos ratios above 10 come from the T = 1 side (now ~1 s cold); their T = 10 times are unchanged
against main measured side by side (sin: 13.4 s vs 14.0 s, 10.0 s vs 12.1 s).

deficit branch, 13:35-13:43 (load average 9-12 on the 2 cores: wall times are inflated about 3x and noisy, so the
CPU seconds of each process, all threads, are printed too).  What drove the costs, measured: gelu's theta table
already converged on 257 graded nodes (its coefficient tail is flat at 3e-13: the near-parallel pairs solved
directly are not noisy for a smooth phi, whose C depends on c, not on the angle), so its cost was the panels' row
marching (the last rows of 10 panels took 20-22 Picard sweeps: a sweep carries a left edge one cell further) and
the closed form evaluated with Cdot in every sweep; sin/cos/erf at T = 10 have genuine theta structure near
theta = 0 (nearby inputs decorrelate like e^{lambda t}: the NTK's uniform-theta series needs > 256 terms, the
graded one 144-192), and the table's doubling kept 513 nodes where 257 suffice.  Built: wavefronts of cells for
the panels' cross-kernels and backward problem; C alone in the sweeps (gelu: its variance parts once per cell);
graded theta tables for smooth activations past sigma_w T = 6; a resolved Chebyshev tail (confirmed by 8 held-out
solves) ends the table's doubling.  Main (b97381d) and this branch, run back to back::

    activation   main: T=1  T=10  ratio  CPU ratio  |  deficit: T=1  T=10  ratio  CPU s T=1/T=10  CPU ratio  err T=10
    gelu               2.6  46.1   18.1     16.2    |           2.8  15.0    5.4    0.9 / 5.8       6.3      2.5e-10
    sin                2.5  18.5    7.4      8.3    |           1.8  10.4    5.7    0.7 / 3.8       5.4      6.1e-11
    cos                3.0  23.4    7.7      9.6    |           2.3  16.0    7.0    0.8 / 4.7       6.2      1.2e-10
    erf                2.9  13.1    4.5      5.1    |           2.4   7.6    3.2    0.7 / 2.6       3.4      7.9e-11
    sigmoid (graded table too)                      |           3.4  15.4    4.5    1.1 / 4.6       4.0      8.8e-11
    relu, leaky_relu (wavefronts)                   |     14.5/15.2  17.5/18.6  1.2  4.1/4.4 s / 5.6/5.5 s  1.3  5.8e-11
    (theta nodes at T = 10: gelu 257 graded, sin/cos 257 graded (were 513 uniform), erf 129 graded; relu's T = 1
    time is the loaded machine's triangle-grid build, not the horizon)

tanh and sigmoid on the polar Fourier dual (sigmoidtanh branch: ``theory/polar_fourier.py``, C and Cdot as
Chebyshev series in the correlation, O(sqrt q) modes instead of O(q) Mehler terms, tabulated once per pair of time
nodes by ``kernels/_fourier_solve.py``), 14:00, load average 11-13, two runs (each T=1 / T=10 pair side by side)::

    activation  T=1 s  T=10 s  ratio  err T=10  rule / outcome
    tanh          2.8    11.2    4.0   9.3e-11  polar Fourier, 416 modes (130 per cell on average), q(T) = 57,
                  2.6    11.5    4.4               65 time nodes, 257 theta nodes (was: refused, 1.45e10 operations)
    sigmoid       3.7     5.2    1.4   7.3e-11  polar Fourier, 170 modes, q(T) = 36.6
                  3.0     4.1    1.4

    main, the same minutes: sigmoid 3.3 / 9.1 s (2.8x, Mehler series of 4400 terms); tanh T = 10 timed out at 120 s.
    The T = 1 column (Mehler series, unchanged) includes the imports and the sympy Assumption-1 analysis (~1-2 s).

softplus and silu on the composite panels through one (log q1, log q2, theta) table of the large-q rule
(``kernels/_qtable.py``, smoothpanels branch), 13:51-14:17, load average 7-11 (both columns in the same run)::

    softplus      2.3  1473.9  645.9   1.1e-04  large-q asymptote (gelu) + tabulated remainder, q(T) = 4.2e5;
                                                the table: 8 boxes per log-q axis (36 box pairs), ~1e6 rule
                                                evaluations at ~0.1-0.2 ms; boxes next to q1 ~ q2 do not converge
                                                in log q at theta ~ 1/sqrt(q) (held-out error up to ~1e-5)
    silu          not measured (same path)

Cold, N = 200, same path, 14:18-14:24, load average 3-8 (T = 1: 1.4 s): sigma_w*T = 5: 118 s (85x; refused before),
error estimate 6.1e-11, 6 boxes, 2.2e5 table + 0.7e5 direct rule evaluations; sigma_w*T = 6: 247 s, 6.8e-5 (the table
warns: 9.6e-6 in a box next to q1 ~ q2).  So the table path is kept to 4.5 < sigma_w*T <= 5
(``ode_kinked_ladder._LARGE_Q_PANELS``); softplus and silu at T = 10 are refused by the tensor grid's cost guard as before
(target missed).

elu through node angle tables (nodetables branch: ``kernels/_node_tables.py``, per time node a Chebyshev series of
(C / sqrt(q1 q2), Cdot) in the node's own angle variable, graded toward theta = 0, built from one batch of exact
evaluations per grid and band and served to every input angle and sweep; self-kernels of the ladder's later degrees
by fixed-diagonal solves iterated in q; anchored sweeps exact next to rho = 1), 2026-12-06 16:08-16:11, load
average 9-10 (both columns of a row in the same run; CPU seconds of each process next to the wall times)::

    activation  T=1 s  T=10 s  ratio  err T=10  rule / outcome
    elu           3.4    28.8    8.5   1.5e-10  closed form; CPU 1.3 s / 10.5 s = 8.1x (main: 1.1 s / 29.3 s = 26x
                                                at load 0.4); 3 node tables (1.5e6 exact evaluations, error 1.2e-12),
                                                134 of the Gram's 137 cross solves through them; Gram equal to main's
                                                to 4e-13 (relative)
    elu           2.8    20.0    7.3   1.5e-10  16:23, load 10-11: CPU 1.3 s / 10.7 s = 8.5x
    elu           2.5    21.0    8.4   1.5e-10  16:23, load 10: CPU 1.2 s / 10.4 s = 8.5x
    elu           1.9    20.9   11.1   1.5e-10  16:36, load 8 -> 14 during the run: CPU 1.2 s / 10.0 s = 8.5x
    (elu(alpha=0.5), sigma_w T = 8, N = 100: main 82.6 s CPU, this branch 32.9 s, errors 2.1e-10 / 2.3e-10; its
    near-parallel pairs skip the tables: smooth_at_parallel)
    softplus      3.3  refused in 57 s          (1.35e10 operations; unchanged.  Node tables of the large-q rule
    silu          2.7  refused in 54 s           past sigma_w T = 5 were tried: softplus sigma_w T = 6, N = 200 took
                                                 192 s CPU, error 7.9e-11, where the (log q, theta) table errs by
                                                 6.8e-5: accurate but far over the target, so not enabled)

softplus and silu with the low-variance tables of the large-q rule (lowq branch: ``theory/largeq_low.py``; both
variances in [0.25, 100) and the mixed cells by tables in log q, ~5 us per (C, Cdot) where the quadrature took
35-39 us; the guard prices five cell classes from the node fractions q(t) >= 100 and 0.25 <= q(t) < 100), 18:50-18:52,
load average 2.4-3.6, cold::

    activation  T=1 s  T=10 s  ratio  err T=10  rule / outcome
    softplus      0.8    58.1      -         -  refused at the 129-node rung: 1.44e10 operations (limit 1e10); the
                                                97-node rung now passes the guard (8e9) and is solved, but its time
                                                grid still changes by more than tol against 65 nodes
    silu          1.0    51.4      -         -  refused at the 129-node rung: 1.25e10 operations
    (was: refused at the 97-node rung, 1.86e10 / 1.9e10, after 30-37 s; the refusal now comes later because the
    97-node rung is solved first (18:24 at load 4.4: 106 s / 98 s).  Target missed on the tensor grid: the
    per-evaluation cost would have to fall another 1.25-1.44x; the panels with node angle tables (softnode branch)
    are the route past sigma_w T = 5.)

softplus and silu through node angle tables of the large-q rule on the panels (softnode branch, with the lowq
branch's low-variance tables of the rule merged), 18:47-18:49, load average 2.1-2.7 (both columns of a row in the same
run)::

    activation  T=1 s  T=10 s  ratio  err T=10  rule / outcome
    softplus      0.9    46.5   53.1   8.7e-11  CPU 0.9 s / 49.6 s = 56.9x; 3 node tables (1.1e6 exact evaluations,
                                                error 1.1e-12), band degrees 16/16/20, 161 time nodes (was: refused)
    silu          1.1    56.6   52.6   7.0e-11  CPU 1.3 s / 64.3 s = 47.8x (was: refused)
    (10x target missed by about 5x.  Profile of softplus (N = 200, CPU 54 s at load 5): 16.5 s compiling the rule (the
    final dual's step selection and the rule at one 512-chunk shape), 28 s evaluating it (~3.5e6 (C, Cdot): node
    tables and their bracketing solves 1.5e6, the degree ladder's probes and self-kernels 1.8e6), ~7 s building the
    rule's remainder, near and low tables; before this branch's changes, N = 20: 294 s CPU, 4.1e6 evaluations at
    20-140 us, 15 compiles.)  ``kernelcalc sweep-T -a softplus --T 1,5,6,10`` (N = 16, d = 8): 85.6 s wall, 88.6 s CPU.
    softplus N = 200 at sigma_w T = 5 and 6 (18:54, load 1.8-3.4): 25.4 s / 30.7 s wall, 29.9 s / 30.1 s CPU, errors
    5.0e-11 / 7.9e-11 (sigma_w T = 5 took 118 s through the (log q, theta) table; 6 was refused).  The guard predicted
    0.86e9 / 1.25e9 / 6.0e9 operations (5 / 7.5 / 36 s) at sigma_w T = 5 / 6 / 10: the variable work only; the fixed
    costs (compiling the rule, ~9-16 s, and building its tables, ~7 s) are not in the model.
    After merging lowq's final commits (faster table builds), 18:55-18:58, load average 4.3 -> 1.5::

    softplus      1.1    47.7   45.1   8.7e-11  CPU 1.0 s / 47.0 s = 48.8x
    silu          1.2    55.8   48.1   7.0e-11  CPU 1.1 s / 67.5 s = 59.0x

    Branch rulecompile (fixed costs of the first call), side by side with the commit before it, 19:19-19:21, load
    average 1.9 -> 1.5 (softplus only; identical NTK and NNGP, bit for bit)::

    this branch   0.8    38.0   45.4   8.7e-11  CPU 1.0 s / 49.7 s = 49.9x
    before        0.8    42.4   51.7   8.7e-11  CPU 1.0 s / 55.7 s = 57.1x

    (The rule compiles twice instead of four times: the step selection and the kinked solvers share one padded shape,
    ``TabulatedRule.values_np``, and the quadrature levels one function with the step traced, ``_QuadLevel``; the
    tables build in ~2.4 s instead of ~3.4 s.  Left: one compile of the five-regime block, 3.3-6 s by load, one of the
    quadrature levels, ~1.3 s, ~2.4 s of table builds, and ~26 s evaluating the rule: the 10x target is still missed.)

    Branch ladder (fewer exact evaluations of the rule: the ladder's probes and later self-kernels start from the same
    problem on the rung below, one exact evaluation per node; the node tables' brackets reuse the probes; the row march
    carries edges across a row per sweep, 14 sweeps per node instead of ~35; bands 1 and 2 of the rule climb from
    degrees 12 and 16), against main (e37e3e5) in alternation, 21:02-21:18, load average 6-9 (wall times noisy: CPU
    seconds of the T = 10 process compared).  Exact evaluations of the rule (N = 200): softplus 3.05e6 -> 1.47e6, silu
    4.34e6 -> 2.02e6; NTK within 2e-12 (softplus), 3e-13 (silu), 2e-14 (elu) of main's, relative to its largest::

    T = 10 CPU s   main round 1 / 2   ladder round 1 / 2
    softplus          50.0 / 54.4        36.8 / 33.9      (err 8.7e-11 -> 8.2e-11)
    silu              69.3 / 75.5        41.8 / 42.0      (err 7.0e-11 -> 7.3e-11)
    elu               12.6 / 12.4         9.0 /  9.3      (err 1.5e-10, unchanged)

    (softplus's T = 10 CPU left: ~15-20 s of it is the rule's first call, its table builds and compile; the 10x target
    is still missed.)

All of this stop merged (dispatch: the rule evaluated eagerly by regime, each regime its own compiled function;
    tables: the rule's table builds 2.5x faster; quadnp: the step selection's quadrature in numpy, no compile; ladder),
    main (e37e3e5, the stop's start) and the merge run back to back, 21:50-21:53, load average 2.8 -> 1.9::

    activation  T=1 s  T=10 s  ratio  err T=10
    softplus      1.0    20.7   20.3   8.2e-11  CPU 1.2 s / 26.2 s = 22.1x   (main: 1.0 / 43.0 s = 42.5x, CPU 47.7x)
    silu          1.4    26.1   18.9   7.3e-11  CPU 1.7 s / 34.4 s = 20.8x   (main: 1.1 / 54.8 s = 50.0x, CPU 53.2x)
    elu           1.4     8.9    6.2   1.5e-10  CPU 1.6 s / 10.9 s =  6.9x
    relu          1.1     5.4    4.8   5.8e-11  CPU 1.2 s /  6.0 s =  5.2x
    gelu          1.0     5.5    5.7   2.5e-10  CPU 1.1 s /  6.8 s =  6.1x

    (softplus left, per caller: the coarse self-kernel that learns q(T), ~8.6 s wall of which ~7 s is the rule's first
    call (four regime compiles ~5 s CPU, table builds ~2 s); node angle table builds 0.6e6 evaluations, ~3.9 s; the
    ladder's probes, self-kernels and direct pairs ~0.7e6, ~5 s; 1.47e6 exact evaluations in all at 6-13 us.  The 10x
    target is still missed by about 2x.)

Stop 27 (seven helper branches in two rounds: rule, ladder, theta; fixed, coarse; nodes measured and not merged),
    main at the stop's start (18eab7d) against the merge, idle machine (load 1-2 after the helpers stopped)::

    23:44-23:46 (load 3 -> 2): stop start 18eab7d softplus 18.1 s (23.1x), silu 23.5 s (22.8x); round 1 (rule, ladder,
    theta) 10.3-10.5 s (11.8-12.9x), 13.9-14.1 s (13.2-13.5x).  00:29 (load 1-1.4): round 1 10.6 s (11.5x), 14.5 s
    (13.4x); round 1 + 2 (fixed, coarse) 8.6-8.8 s (8.1-10.3x), 11.0-11.3 s (9.6-10.2x).
    --repeat 3, 00:37, the final merge (f3f4fcb), median of 3 alternating cold runs each:
    softplus      0.8     8.2   10.4   1.1e-10  all runs: T = 1 [0.82, 0.78, 0.78] s, T = 10 [8.52, 8.14, 8.19] s
    silu          1.1    11.0   10.4   4.5e-11  all runs: T = 1 [1.09, 1.03, 1.06] s, T = 10 [11.12, 11.02, 10.59] s
    all built-ins, 00:44 (load 3.3 -> 1.8): relu 5.3x, leaky_relu 5.5, softplus 10.5, tanh 4.2, sigmoid 1.7, erf 2.9,
    gelu 5.2, silu 10.6, sin 4.2, cos 4.8, elu 5.4, identity 3.4; quadratic blows up (the right refusal)

    (softplus T = 10 left, 8.7 s in-process: jax import ~1 s (T = 1 does not import jax), the rule's first use ~3 s
    (four regime compiles ~0.4 s each, single-threaded, threads measured not to help; table builds ~1 s on two
    threads), 0.81e6 chunk slots for 0.71e6 exact evaluations at ~3 us, Python ~1.9 s.  The 10x target is missed by
    about 4 %: softplus and silu at 10.4x, every other built-in within 6.4x.)

Stop 28 (helper branches band1, compile, nodetab and the lead's dispatch order), the stop's start (d80ff33) against
    the merge (41153db), alternating, each tree with its own bytecode cache, load 2.6 -> 1.6; --repeat 3 medians::

    02:42 start   softplus 0.9 / 9.8 s = 10.9x (CPU 12.0x), silu 1.2 / 12.8 s = 11.0x (CPU 11.6x)
    02:44 merge   softplus 0.9 / 7.0 s =  7.7x (CPU  8.6x), silu 1.3 /  8.1 s =  6.3x (CPU  7.1x)
    02:45 start   softplus 0.9 / 9.9 s = 11.0x (CPU 12.3x), silu 1.1 / 12.3 s = 11.4x (CPU 12.0x)
    02:46 merge   softplus 0.8 / 6.6 s =  7.9x (CPU  9.0x), silu 1.1 /  8.0 s =  7.1x (CPU  7.7x)
    errors at T = 10: softplus 1.1e-10 -> 1.2e-10, silu 4.5e-11 -> 4.8e-11 (Gram within 2.3e-12 / 3.3e-13 of max|NTK|)
    all built-ins, 02:48-02:53 (load 1.2, bench_regimes.py --horizon-repeat 3, medians): relu 5.7x, leaky_relu 5.8,
    softplus 7.9, tanh 4.6, sigmoid 1.6, erf 3.4, gelu 5.7, silu 7.0, sin 4.5, cos 5.5, elu 5.4, identity 4.5;
    quadratic blows up (the right refusal)

    stop 37 (2026-12-08, 00:43-00:55, load 1.3, ``bench_regimes.py --only horizon``): relu 5.5x, leaky_relu 5.3,
    softplus 6.6, tanh 2.1, sigmoid 1.7, erf 1.4, gelu 4.2, silu 6.0, sin 1.5, cos 2.2, identity 1.1; elu 9.2x there
    (15.9 s), 12.3x (21.7 s) in the run before: stop 36's bands of nearly antiparallel pairs had put every sphere-table
    node with cos theta_0 < -0.85 on finer grids at sigma_w T = 10 (bisected to 775c5f9).  That side is now banded at
    the edges of sigma_w T <= 1 (pi - theta_0 < 0.1): elu 1.9 / 14.0 s = 7.3x (01:25, idle, ``--only elu``).  (Without
    it on the panels elu took 7.7 s = 4.4x, but relu at sigma_w T = 5 then erred by 1.6e-7 against an estimate of
    2.9e-8: the review of stop 37.)

    (softplus T = 10 left, ~7 s: the jax import ~0.9 s (0.5 s of it ml_dtypes 0.7's ufunc registration, 0.2 s jax's
    package-metadata reads), four regime compiles ~1.0 s, table builds ~0.8 s, 0.41e6 exact evaluations (was 0.71e6)
    overlapped with their dispatch, Python ~1.5 s.)

Run: ``python benchmarks/bench_regimes_horizon.py [--n 200] [--timeout 600] [--only tanh,sin] [--repeat 3]``; the lead's
``benchmarks/bench_regimes.py`` calls :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

BUILTINS = ("relu", "leaky_relu", "softplus", "tanh", "sigmoid", "erf", "gelu", "silu", "sin", "cos", "elu",
            "quadratic", "identity")

_CHILD = r"""
import json, sys, time, warnings
import numpy as np
t0, c0 = time.perf_counter(), time.process_time()
import kernelcalc as kc
from kernelcalc.data import sphere_normalise
act, T, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
X = sphere_normalise(np.random.default_rng(0).normal(size=(n, 10)))
out = dict(activation=act, T=T)
try:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        k = kc.node_kernel(X, activation=act, T=T)
    out.update(seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0, error=float(k.info["error_estimate"]) / float(np.max(np.abs(k.ntk))),
               rule=k.info.get("expectation"), q_max=k.info.get("q_max"), time_nodes=k.info.get("time_nodes"),
               warnings=[str(w.message)[:160] for w in caught if "Assumption" not in str(w.message)])
except Exception as e:  # a refusal (KernelcalcInputError) or a failure: recorded, not raised
    out.update(seconds=time.perf_counter() - t0, failure=f"{type(e).__name__}: {e}"[:300])
print(json.dumps(out))
"""


def _one(act: str, T: float, n: int, timeout: float) -> dict:
    env = dict(os.environ)
    try:
        p = subprocess.run([sys.executable, "-c", _CHILD, act, str(T), str(n)], capture_output=True, text=True,
                           timeout=timeout, env=env)
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        return json.loads(line[-1]) if line else dict(activation=act, T=T, failure=p.stderr[-300:])
    except subprocess.TimeoutExpired:
        return dict(activation=act, T=T, seconds=timeout, failure=f"timeout after {timeout:g} s")


def _median_run(runs: list) -> dict:
    """The run of median wall time among ``runs`` (dicts of :func:`_one`), with every run's wall time in ``all``; a
    failure, when any run failed."""
    failed = [r for r in runs if "failure" in r]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return dict(ordered[(len(ordered) - 1) // 2], all=[round(r["seconds"], 2) for r in runs])


def run(n: int = 200, timeout: float = 600.0, activations=BUILTINS, repeat: int = 1) -> list[dict]:
    """The sigma_w*T = 10 table (module doc): one dict per activation, printed as it is measured.  ``repeat`` > 1:
    each of T = 1 and T = 10 that many times, alternating (fresh process each), and the run of median wall time kept
    (a cold run of about a second varies by +-20 % on a 2-core machine; every wall time is in ``all_T1``/``all_T10``)."""
    print(f"sigma_w*T = 10 against T = 1: node_kernel, N = {n} on the sphere (d = 10), cold (fresh process each)"
          + (f", median of {repeat} alternating runs" if repeat > 1 else ""))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'activation':<11} {'T=1 s':>7} {'T=10 s':>8} {'ratio':>6} {'err T=10':>9}  rule / outcome")
    rows = []
    for act in activations:
        runs = [(_one(act, 1.0, n, timeout), _one(act, 10.0, n, timeout)) for _ in range(repeat)]
        a, b = _median_run([r[0] for r in runs]), _median_run([r[1] for r in runs])
        row = dict(all_T1=a.get("all"), all_T10=b.get("all"),activation=act, seconds_T1=a.get("seconds"), seconds_T10=b.get("seconds"),
                   ratio=(b["seconds"] / a["seconds"]) if "failure" not in b and a.get("seconds") else None,
                   cpu_T1=a.get("cpu_seconds"), cpu_T10=b.get("cpu_seconds"),
                   error_T10=b.get("error"), error_T1=a.get("error"), rule_T10=b.get("rule"), q_T10=b.get("q_max"),
                   failure_T10=b.get("failure"), failure_T1=a.get("failure"), warnings_T10=b.get("warnings"),
                   meets_target=("failure" not in b and b.get("error", 1) <= 1e-9
                                 and b["seconds"] <= 10 * a.get("seconds", 0)))
        rows.append(row)
        ratio = f"{row['ratio']:.1f}" if row["ratio"] is not None else "-"
        err = f"{row['error_T10']:.1e}" if row["error_T10"] is not None else "-"
        t1 = f"{row['seconds_T1']:.1f}" if row["seconds_T1"] is not None else "-"
        t10 = f"{row['seconds_T10']:.1f}" if row["seconds_T10"] is not None else "-"
        what = row["failure_T10"] or f"{row['rule_T10']}, q(T) = {row['q_T10']:.3g}"
        if row["cpu_T1"] and row["cpu_T10"]:     # CPU seconds of the process (all threads): less load-dependent (first:
            # the rule's description is long and the line is cut at 150 characters)
            what = f"CPU {row['cpu_T1']:.1f} s / {row['cpu_T10']:.1f} s = {row['cpu_T10'] / row['cpu_T1']:.1f}x; " + what
        print(f"{act:<11} {t1:>7} {t10:>8} {ratio:>6} {err:>9}  {what[:150]}", flush=True)
        if repeat > 1 and row["all_T1"] and row["all_T10"]:
            print(f"{'':<11} all runs: T = 1 {row['all_T1']} s, T = 10 {row['all_T10']} s", flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per (activation, T) at most")
    ap.add_argument("--only", default=None, help="comma-separated subset of the built-ins")
    ap.add_argument("--repeat", type=int, default=1, help="cold runs of each T, alternating; the median is kept")
    a = ap.parse_args(argv)
    if a.repeat < 1:
        ap.error("--repeat must be at least 1")
    run(a.n, a.timeout, tuple(a.only.split(",")) if a.only else BUILTINS, a.repeat)


if __name__ == "__main__":
    main()
