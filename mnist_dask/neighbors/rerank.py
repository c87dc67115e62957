"""Re-rank k-NN candidates by the IDM distance (mnist_dask.neighbors.idm), one task per block of queries.

The exact k-NN finds each query's candidates cheaply (e.g. in PCA space); the IDM distance,
~300x dearer per pair than a Euclidean one, is then computed only for those few candidates.
Each task gets its queries' images and their candidates' images (a few MB), never the
whole training set.
"""

from __future__ import annotations

import uuid

import numpy as np
from distributed import Client, span

from mnist_dask.neighbors.idm import idm_distances, sobel_gradients

QUERY_BLOCK = 500  # queries per task


def idm_rerank(
    client: Client, queries: np.ndarray, train_images: np.ndarray, candidates: np.ndarray, warp: int, context: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates (n, c) of each query (n, h, w) among train_images, re-ordered by IDM distance.

    Returns (train indices (n, c), IDM distances (n, c)), nearest first; equal distances keep
    the candidates' order.
    """
    if len(queries) == 0:
        return candidates.copy(), np.zeros(candidates.shape)
    token = uuid.uuid4().hex  # the blocks' inputs are not hashed: a fresh key per call
    with span("idm-rerank"):
        futures = [
            client.submit(
                idm_block,
                queries[s : s + QUERY_BLOCK],
                train_images[candidates[s : s + QUERY_BLOCK]],
                warp,
                context,
                key=f"idm-rerank-{token}-{s}",
            )
            for s in range(0, len(queries), QUERY_BLOCK)
        ]
        distances = np.concatenate(client.gather(futures))
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1), np.take_along_axis(distances, order, axis=1)


def idm_block(queries: np.ndarray, candidates: np.ndarray, warp: int, context: int) -> np.ndarray:
    """IDM distances (n, c) of query images (n, h, w) to their candidate images (n, c, h, w)."""
    n, c, h, w = candidates.shape
    query_grad = sobel_gradients(queries)
    candidate_grad = sobel_gradients(candidates.reshape(n * c, h, w)).reshape(n, c, 2, h, w)
    return idm_distances(query_grad, candidate_grad, warp=warp, context=context)
