"""Allow ``python -m mnist_dask``."""

from mnist_dask.cli import main

raise SystemExit(main())
