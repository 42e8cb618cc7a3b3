def mlp_kernel(x1, x2=None, *, activation, depth, w_std=1.0, b_std=0.0, out_w_std=1.0, out_b_std=0.0):
    raise NotImplementedError("being written")
