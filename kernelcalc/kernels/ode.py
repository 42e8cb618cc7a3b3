def node_kernel(x1, x2=None, *, activation, T=1.0, sigma_w=1.0, sigma_u=1.0, sigma_v=1.0):
    raise NotImplementedError("being written")
