"""Theory: activations, Assumption 1, Gaussian expectations, dual kernels, recursions, symbolic derivations."""
