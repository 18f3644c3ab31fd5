"""The version of ithp_fast (a leaf module: anything in the package may import it)."""

__version__ = "0.1.0"
