r"""What the kernel predicts, and what trained networks do: softplus against relu on a great circle.

Six training points on the great circle $x(\theta)=\sqrt d(\cos\theta,\sin\theta,0)$ of the sphere in
$d=3$ (targets $\sin 2\theta+\tfrac12\cos\theta$). For each activation, :func:`kernelcalc.compare_predictions`
computes the infinite-width prediction of the Neural ODE ($T=1$, $\sigma_u=2$; ``kernel="ntk"``,
``compute_cov=True``: the mean $\pm2$ s.d. over initialisations of gradient descent with step
$\eta=1/\lambda_{\max}$) on 90 points of the circle after $k=0, 8, 64, 512$ steps, and trains 32
networks of width 256 from independent initialisations (RK4, two steps on $[0,T]$) with the same
steps: their mean and $\pm2$ s.d. are drawn on top. A few minutes on 2 cores.

    python examples/predict_figure.py       # prints the tables, writes predict.png
"""

import numpy as np

import kernelcalc as kc

STEPS = (0, 8, 64, 512)
MODEL = dict(model="node", T=1.0, sigma_u=2.0)
WIDTH, N_NETWORKS = 256, 32


def circle(theta, d=3):
    return np.sqrt(d) * np.stack([np.cos(theta), np.sin(theta)] + [0 * theta] * (d - 2), axis=1)


def run(activation, theta_train, y, theta_test):
    X, Xt = circle(theta_train), circle(theta_test)
    lam_max = kc.predict(X, y, t=0.0, activation=activation, **MODEL).info["lambda_max"]
    return kc.compare_predictions(X, y, Xt, activation=activation, **MODEL, widths=[WIDTH], n_networks=N_NETWORKS,
                                  learning_rate=1.0 / lam_max, steps=list(STEPS), solver_steps=2, progress=False)


def plot(results, theta_train, y, theta_test, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), len(STEPS), figsize=(3.2 * len(STEPS), 2.9 * len(results)),
                             sharex=True, sharey=True)
    for row, (act, r) in enumerate(results.items()):
        e = r.ensembles[0]
        lam_min = r.prediction["info"]["lambda_min"]
        for col, k in enumerate(STEPS):
            ax = axes[row, col]
            i = e.steps.index(k)
            m, s = r.mean_pred[i], np.sqrt(np.maximum(r.var_pred[i], 0))
            ax.fill_between(theta_test, m - 2 * s, m + 2 * s, color="C0", alpha=0.25, lw=0,
                            label="prediction ±2 s.d.")
            ax.plot(theta_test, m, color="C0", lw=1.5, label="predicted mean")
            em, es = e.mean_test[i], np.sqrt(e.var_test[i])
            ax.plot(theta_test, em, color="C3", lw=1.0, ls="--", label=f"{N_NETWORKS} trained nets: mean")
            ax.plot(theta_test, em - 2 * es, color="C3", lw=0.7, ls=":", label="trained ±2 s.d.")
            ax.plot(theta_test, em + 2 * es, color="C3", lw=0.7, ls=":")
            ax.plot(theta_train, y, "kx", ms=6, mew=1.5, label="training data")
            ax.set_title(f"{act}: k = {k}  (t·λ_min = {e.times[i] * lam_min:.2g})", fontsize=9)
            if col == 0:
                ax.set_ylabel("f(x(θ))")
            if row == len(results) - 1:
                ax.set_xlabel("θ on the great circle")
    axes[0, 0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"Neural ODE (T=1, σ_u=2): kc.predict vs {N_NETWORKS} networks of width {WIDTH} trained by GD "
                 "(η = 1/λ_max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore", kc.Assumption1Warning)      # relu: outside the theorem, computed anyway
    theta_train = np.array([0.2, 1.3, 2.3, 3.4, 4.4, 5.4])
    y = np.sin(2 * theta_train) + 0.5 * np.cos(theta_train)
    theta_test = np.linspace(0.0, 2 * np.pi, 90, endpoint=False)
    results = {}
    for act in ("softplus", "relu"):
        r = run(act, theta_train, y, theta_test)
        results[act] = r
        e = r.ensembles[0]
        print(r.summary())
        print(f"{act}: learning_rate {e.params['learning_rate']:.4g}, lambda_min "
              f"{r.prediction['info']['lambda_min']:.4g}")
        print(f"{'step':>5} {'t':>8} {'max|z mean|':>11} {'max|z var|':>10} {'mean sd pred':>12} {'mean sd nets':>12}")
        for i, k in enumerate(e.steps):
            print(f"{k:5d} {e.times[i]:8.4g} {np.abs(r.z_mean[0][i]).max():11.2f} {np.abs(r.z_var[0][i]).max():10.2f} "
                  f"{np.mean(np.sqrt(np.maximum(r.var_pred[i], 0))):12.3f} {np.mean(np.sqrt(e.var_test[i])):12.3f}")
    plot(results, theta_train, y, theta_test, "predict.png")
    print("wrote predict.png")
