"""Jobs: job files, the driver that runs one, run records, submission to a cluster."""
