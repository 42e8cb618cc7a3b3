"""Studies: analyses that combine kernels with data (checks, spectra, certificates, horizons, comparisons)."""
