"""Transforms: pure numpy kernels on blocks of images, and the registry that runs them as stages."""
