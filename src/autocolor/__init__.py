"""autocolor: turn grayscale photos into color ones."""

__version__ = "0.1.0"
