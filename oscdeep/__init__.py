"""oscdeep: one-shot-colour deep-sky astrophotography with a persistent library database."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("oscdeep")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
