"""Report building; `reports/out/` is the default output folder."""
