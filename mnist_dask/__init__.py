"""mnist-dask: the classic MNIST classification study as distributed Dask batch jobs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mnist-dask")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
