"""Neighbours: exact blocked k-NN, grid search by precomputed neighbours, IDM re-ranking."""
