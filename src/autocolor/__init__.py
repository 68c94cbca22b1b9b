"""autocolor: turn grayscale photos into color ones."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Colorizer pulls in torch; importing it lazily keeps `import autocolor` light.
    if name == "Colorizer":
        from autocolor.inference import Colorizer

        return Colorizer
    raise AttributeError(f"module 'autocolor' has no attribute {name!r}")
