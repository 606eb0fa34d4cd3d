"""Defaults of ``seglens serve`` that the CLI shows without importing FastAPI (a leaf module)."""

__all__ = ["DEFAULT_SERVE_MAX_PIXELS"]

# 50 MP covers 48 MP phone photos (8000 x 6000); one such job peaks near 2.5 GB (RGB image,
# chunked upsampling, overlay), so a server should not accept the CLI's 100 MP by default.
DEFAULT_SERVE_MAX_PIXELS = 50_000_000
