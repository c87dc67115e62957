"""Default locations and the environment variables that change them.

Free of heavy imports, so the command line can describe its options without loading Zarr or Dask.
"""

DEFAULT_STORE = "storage/mnist.zarr"
STORE_ENV = "MNIST_DASK_STORE"
DEFAULT_SOURCE = "openml"
SOURCE_ENV = "MNIST_DASK_SOURCE"
CACHE_ENV = "MNIST_DASK_CACHE"  # the download cache folder (default $XDG_CACHE_HOME/mnist-dask)
DEFAULT_CHUNK = 5000  # images per Zarr chunk of the raw stage
