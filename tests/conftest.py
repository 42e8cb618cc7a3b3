"""Test-session settings: the CLI's persistent jax compilation cache stays off in tests, so CliRunner
runs neither write to the user's cache folder nor change this process's jax configuration."""

import os

os.environ.setdefault("KERNELCALC_JAX_CACHE", "0")
