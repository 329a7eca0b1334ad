"""Operations: check-config, preview, readiness and metrics; commands that compose the layers
below them."""
