"""oos-notify: out-of-specification notifications for cell and gene therapy lots."""

__version__ = "0.1.0"
