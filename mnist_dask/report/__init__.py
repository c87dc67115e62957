"""Reports: the figures and tables experiments declare, and the renderer that draws them."""
