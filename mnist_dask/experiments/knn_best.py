"""``knn_best``: a k-NN pipeline chosen by cross-validation on the training images only.

Ingredients are added one at a time, each a chain of stages in the store (see
:mod:`mnist_dask.transforms.registry`): raw -> +deskew -> +blur -> +PCA -> +shifts -> +rotations, then
+IDM: a row's nearest candidates (the +PCA row's, or the +rotations row's among the shifted and
rotated copies) re-ranked by the image distortion model distance (:mod:`mnist_dask.neighbors.idm`)
on that row's images before PCA. Every ingredient's free choices (blur sigma, PCA size and
feature scaling, rotation angle, IDM base row, candidates and warp) and every row's (k, weights)
are chosen by the same cross-validation:

* folds are drawn over the *original* training images (stratified), so all copies of an
  image (its shifts and rotations) sit on the same side of a fold. They follow the training
  order unless ``cv_shuffle``: MNIST's training order keeps a writer's digits near one
  another, and the test set's writers are not the training set's, so shuffled folds (the
  same writer on both sides) overstate what carries over to the test set;
* a fold's training rows are every copy of its training images; its validation rows are
  ``cv_val_per_fold`` of its held-out *original* images (no augmented copy is ever a
  validation row);
* the neighbours of each fold's validation rows are found once, for the largest k, with
  the exact blocked k-NN, and dask-ml ``GridSearchCV`` scores every (k, weights) as a vote.

Each ingredient keeps the CV-best setting of its own options and builds on the previous
one; the final model is the row with the best CV score. The test set is used once, at
the end, to score every row of the ablation table.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import dask.array as da
import numpy as np
from distributed import Client
from pydantic import Field, Strict

from mnist_dask.data.store import Store
from mnist_dask.experiments import Context, ParamsError, Result, experiment, stage_rows
from mnist_dask.experiments.common import first_rows_check
from mnist_dask.experiments.params import Bool, Count, Float, Options, Positive, Seed, Weights, default_list, parameters
from mnist_dask.neighbors.knn import kneighbors, vote
from mnist_dask.neighbors.rerank import idm_rerank
from mnist_dask.neighbors.search import Fold, fold_neighbors, vote_search
from mnist_dask.report import spec
from mnist_dask.transforms.registry import output_stage, run_transform

Chain = tuple[tuple[str, dict[str, Any]], ...]  # (transform, params) steps applied to raw

_VAL_CHUNK = 1000  # validation / test rows per k-NN block
_TRAIN_CHUNK = 20_000  # training rows per k-NN block


@dataclass
class Candidate:
    """One chain's cross-validation outcome: best (k, weights), its score, and what it cost."""

    label: str
    chain: Chain
    stage: str = ""
    best_params: dict[str, Any] = field(default_factory=dict)
    cv_score: float = float("nan")
    cv_results: dict[str, list[Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    idm: dict[str, Any] | None = None  # IDM re-rank: warp, context, candidates, image stage


@parameters
class KNNBestParams:
    """The search space of every ingredient, the CV protocol, and optional row samples (0: all)."""

    cv: Annotated[int, Strict(), Field(ge=2)] = 5
    cv_val_per_fold: Count = 2000
    cv_shuffle: Bool = False  # shuffle the originals before splitting them into folds (seeded)
    seed: Seed = 0
    n_neighbors: Options[Positive] = default_list(1, 2, 3, 4, 5, 6, 7, 8, 10)
    weights: Options[Weights] = default_list("uniform", "distance")
    blur_sigmas: Options[Float] = default_list(1.0)
    pca_sizes: Options[Positive] = default_list(40, 50, 60)
    pca_scale_powers: Options[Float] = default_list(0.0, 0.25, 0.5)
    shift_radius: Count = 1
    shift_shape: Literal["cross", "square"] = "cross"
    rotation_degrees: Options[Float] = default_list(10.0)
    idm_warps: Options[Positive] = default_list(1, 2)
    idm_context: Count = 1
    idm_candidates: Options[Positive] = default_list(10, 30)  # nearest rows re-ranked per query (at least max k)
    # the rows whose nearest training rows IDM re-ranks (on that row's images before PCA)
    idm_bases: Options[Literal["+PCA", "+rotations"]] = default_list("+PCA", "+rotations")
    train_sample: Count = 0
    test_sample: Count = 0


_FIRST_ROWS = first_rows_check(train=("train_sample",), test=("test_sample",))  # samples of raw's splits (0: all)


def check_rows(p: KNNBestParams, rows: dict[str, int]) -> None:
    """Refuse what raw's row counts (``{"train": n, "test": n}``) rule out: a sample larger than its split, more
    folds than the training rows searched."""
    _FIRST_ROWS(p, rows)
    train = p.train_sample or rows["train"]
    if p.cv > train:
        dataset = "raw"
        for name, step in _base_chain(p):
            dataset = output_stage(name, step, dataset)
        raise ParamsError(f"params.cv = {p.cv}: more folds than the {train} training rows of {dataset}")


@experiment("knn_best", KNNBestParams, check=check_rows)
def run(ctx: Context, params: KNNBestParams) -> Result:
    """Search the ingredients by CV on the training set, then score every ablation row on the test set once."""
    check_rows(params, stage_rows(ctx.store, "raw"))  # checked up front too, where raw was there before the run
    search = _Search(ctx, params)
    rows = search.ablation()
    chosen = max(rows, key=lambda c: c.cv_score)
    ctx.log(f"knn_best: chosen {chosen.stage} {chosen.best_params} (cv {chosen.cv_score:.4f})")
    table = [_test_row(ctx, search, row) for row in rows]
    final = next(t for t, row in zip(table, rows) if row is chosen)
    ctx.log(f"knn_best: test accuracy {final['test_accuracy']:.4f}")
    report = search.report()
    return {
        "model": {
            "estimator": "exact k-NN (KNN of mnist_dask.neighbors.knn)",
            "dataset": chosen.stage,
            "chain": _chain_json(chosen.chain),
            **chosen.best_params,
        },
        "metrics": {"test_accuracy": final["test_accuracy"], "cv_accuracy": chosen.cv_score},
        "ablation": table,
        "search": report,
        "report": [_ablation_display(table, rows.index(chosen)), *_search_displays(report)],
    }


def _ablation_display(table: list[dict[str, Any]], chosen: int) -> spec.Display:
    """The ablation: one row per ingredient, the chosen pipeline (best CV score) marked."""
    idm = any(row["idm"] for row in table)
    columns = {
        "ingredient": "ingredient",
        "features": "features",
        "train_rows": "train rows",
        "n_neighbors": "k",
        "weights": "weights",
        **({"idm": "IDM re-rank"} if idm else {}),
        "cv_score": "CV score",
        "test_accuracy": "test accuracy",
        "time_s": "time (s)",
    }
    return spec.records(
        "Ablation",
        [{**row, "idm": _idm_words(row["idm"])} for row in table],
        columns,
        highlight=chosen,
        formats={"train rows": ",d", "time (s)": ".1f"},
        caption="One row per ingredient as the search added it (k and weights chosen by cross-validation on the "
        "training set). The marked row is the chosen pipeline, the best CV score; its test accuracy is the run's.",
    )


def _search_displays(report: dict[str, Any]) -> list[spec.Display]:
    """The search's protocol and options, and every candidate pipeline's cross-validation outcome."""
    settings = [[key, _words(report[key])] for key in ("protocol", "param_grid", "options")]
    candidates = report["candidates"]
    idm = any(c["idm"] for c in candidates)
    rows = [
        [
            c["ingredient"],
            c["stage"],
            *([_idm_words(c["idm"])] if idm else []),
            _words(c["best_params"]),
            c["cv_score"],
            _words(c["seconds"]),
        ]
        for c in candidates
    ]
    columns = ["ingredient", "stage", *(["IDM re-rank"] if idm else []), "best parameters", "CV score", "seconds"]
    return [
        spec.table("Search", ["setting", "value"], settings),
        spec.table("Search candidates (cross-validated on the training set)", columns, rows),
    ]


def _idm_words(idm: dict[str, Any] | None) -> str | None:
    """An IDM re-rank's options in words: "warp 1, context 1, candidates 10 (on <image stage>)"."""
    if not idm:
        return None
    return ", ".join(f"{k} {v}" for k, v in idm.items() if k != "images") + f" (on {idm['images']})"


def _words(value: Any) -> str:
    """A (nested) dict or list in one line: k=v, lists in brackets, transform chains as a → b (p=1)."""
    if isinstance(value, dict):
        return ", ".join(
            f"{k}={_words(v) if not isinstance(v, dict) else '(' + _words(v) + ')'}" for k, v in value.items()
        )
    if isinstance(value, list):
        return "[" + ", ".join(_words(v) for v in value) + "]"
    return str(value)


class _Search:
    """The staged search: builds chains as stages and scores them by group-fold CV."""

    def __init__(self, ctx: Context, params: KNNBestParams):
        self.ctx, self.p = ctx, params
        self.store: Store = ctx.store
        self.client: Client = ctx.client
        self.base: Chain = _base_chain(params)
        self.grid: dict[str, list[Any]] = {"n_neighbors": list(params.n_neighbors), "weights": list(params.weights)}
        self.tried: list[Candidate] = []
        self.folds_by_stage: dict[str, tuple[list[Fold], np.ndarray]] = {}

    def ablation(self) -> list[Candidate]:
        """The six cumulative rows, each the CV-best of its ingredient's options."""
        augment = {"radius": int(self.p.shift_radius), "shape": self.p.shift_shape}
        raw = self.best("raw", [()])
        deskew = self.best("+deskew", [(("deskew", {}),)])
        blur = self.best("+blur", [(*deskew.chain, ("blur", {"sigma": float(s)})) for s in self.p.blur_sigmas])
        pca = self.best(
            "+PCA",
            [(*blur.chain, ("pca", _pca(n, power))) for n in self.p.pca_sizes for power in self.p.pca_scale_powers],
        )
        pca_step = pca.chain[-1]
        shifts = self.best("+shifts", [(*blur.chain, ("augment", {**augment, "degrees": 0.0}), pca_step)])
        rotations = self.best(
            "+rotations",
            [(*blur.chain, ("augment", {**augment, "degrees": float(d)}), pca_step) for d in self.p.rotation_degrees],
        )
        bases = {"+PCA": pca, "+rotations": rotations}
        idm = max(
            (c for name in self.p.idm_bases for c in self.score_idm(bases[name], self.build(bases[name].chain[:-1]))),
            key=lambda c: c.cv_score,
        )
        return [raw, deskew, blur, pca, shifts, rotations, idm]

    def best(self, label: str, chains: list[Chain]) -> Candidate:
        """Score every chain by CV and return the best (first on ties)."""
        scored = [self.score(label, chain) for chain in chains]
        return max(scored, key=lambda c: c.cv_score)

    def score(self, label: str, chain: Chain) -> Candidate:
        """Build the chain's stages, then cross-validate (k, weights) on its training rows."""
        candidate = Candidate(label, chain)
        start = time.perf_counter()
        candidate.stage = self.build(chain)
        candidate.seconds["stages"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        X, y, folds = self.training_rows(candidate.stage)
        tables = fold_neighbors(X, folds, max(self.grid["n_neighbors"]), self.client, _VAL_CHUNK, _TRAIN_CHUNK)
        found = vote_search(tables, y, folds, self.grid, self.client)
        candidate.best_params, candidate.cv_score = found.best_params, found.best_score
        candidate.cv_results = found.cv_results
        candidate.seconds["cv"] = round(time.perf_counter() - start, 3)
        self.tried.append(candidate)
        self.ctx.log(
            f"knn_best: {label} {candidate.stage}: cv {candidate.cv_score:.4f} {candidate.best_params} "
            f"({candidate.seconds['stages'] + candidate.seconds['cv']:.0f} s)"
        )
        return candidate

    def score_idm(self, base: Candidate, image_stage: str) -> list[Candidate]:
        """Cross-validate the base row's neighbours re-ranked by IDM on image_stage's images, per (candidates, warp).

        image_stage holds the base row's training rows as images (its chain without the PCA step).

        The base's fold searches give each validation row its nearest training rows (as many as
        the most candidates asked for), once for all options; the IDM re-orders each row's first
        ``candidates`` of them, and (k, weights) are scored as votes again. Each row's time
        counts the shared search as if it ran alone.
        """
        start = time.perf_counter()
        max_k = max(self.grid["n_neighbors"])
        sizes = sorted({max(int(c), max_k) for c in self.p.idm_candidates})
        X, y, folds = self.training_rows(base.stage)
        idx, dist = fold_neighbors(X, folds, sizes[-1], self.client, _VAL_CHUNK, _TRAIN_CHUNK)
        images = self.store.read(f"{image_stage}/train/images").compute()
        val = np.concatenate([v for _, v in folds])
        shared = time.perf_counter() - start
        scored = []
        for n_candidates, warp in itertools.product(sizes, (int(w) for w in self.p.idm_warps)):
            start = time.perf_counter()
            options = {
                "warp": warp,
                "context": int(self.p.idm_context),
                "candidates": n_candidates,
                "images": image_stage,
            }
            candidate = Candidate("+IDM", (*base.chain, ("idm", options)), stage=base.stage, idm=options)
            candidate.seconds["stages"] = 0.0
            reranked = idx[:, :n_candidates].copy(), dist[:, :n_candidates].copy()
            reranked[0][val], reranked[1][val] = idm_rerank(
                self.client, images[val], images, idx[val, :n_candidates], warp, options["context"]
            )
            found = vote_search(reranked, y, folds, self.grid, self.client)
            candidate.best_params, candidate.cv_score = found.best_params, found.best_score
            candidate.cv_results = found.cv_results
            candidate.seconds["cv"] = round(shared + time.perf_counter() - start, 3)
            self.tried.append(candidate)
            self.ctx.log(
                f"knn_best: +IDM (warp {warp}, {n_candidates} candidates, {len(val) * n_candidates:,} pairs) "
                f"on {base.stage}: cv {candidate.cv_score:.4f} {candidate.best_params} "
                f"({candidate.seconds['cv']:.0f} s)"
            )
            scored.append(candidate)
        return scored

    def build(self, chain: Chain) -> str:
        """Run (or skip, when complete) every stage of base + chain; returns the last stage."""
        stage = "raw"
        for name, params in (*self.base, *chain):
            stage = run_transform(self.store, self.client, name, params, input_stage=stage).stage
        return stage

    def training_rows(self, stage: str) -> tuple[da.Array, np.ndarray, list[Fold]]:
        """Features, labels and group folds (over original images) of a stage's training split."""
        X, y = self.store.read_xy(stage, "train")
        y = y.compute()
        source = np.arange(len(y)) if stage == "raw" else self.store.read(f"{stage}/train/source_index").compute()
        copy = _copy_ids(self.store, stage, len(source))
        folds = group_folds(source, copy, y, self.p.cv, self.p.cv_val_per_fold, self.p.seed, self.p.cv_shuffle)
        return X, y, folds

    def report(self) -> dict[str, Any]:
        """What was searched, and every candidate's CV outcome."""
        return {
            "protocol": {
                "cv": self.p.cv,
                "folds": "stratified over original training images (group folds), "
                + ("shuffled" if self.p.cv_shuffle else "in training order"),
                "validation_rows_per_fold": self.p.cv_val_per_fold,
                "validation_rows": "original images only",
                "seed": self.p.seed,
                "base": _chain_json(self.base),
            },
            "param_grid": self.grid,
            "options": {
                key: getattr(self.p, key)
                for key in (
                    "blur_sigmas",
                    "pca_sizes",
                    "pca_scale_powers",
                    "shift_radius",
                    "shift_shape",
                    "rotation_degrees",
                    "idm_warps",
                    "idm_context",
                    "idm_candidates",
                    "idm_bases",
                )
            },
            "candidates": [
                {
                    "ingredient": c.label,
                    "stage": c.stage,
                    "cv_score": c.cv_score,
                    "best_params": c.best_params,
                    "seconds": c.seconds,
                    "idm": c.idm,
                    "cv_results": {key: c.cv_results[key] for key in ("params", "mean_test_score", "std_test_score")},
                }
                for c in self.tried
            ],
        }


def group_folds(
    source: np.ndarray,
    copy: np.ndarray,
    y: np.ndarray,
    cv: int,
    val_per_fold: int,
    seed: int,
    shuffle: bool = False,
) -> list[Fold]:
    """Folds over original images: all copies of the training images vs. originals of the held-out ones.

    ``val_per_fold`` > 0 keeps that many (seeded) held-out originals per fold as validation rows.
    Unless ``shuffle``, each fold holds out a stretch of the training order (StratifiedKFold's
    default), which keeps most of a writer's digits on one side.
    """
    from sklearn.model_selection import StratifiedKFold

    originals = np.flatnonzero(copy == 0)
    rng = np.random.default_rng(seed)
    folds = []
    for train_part, val_part in StratifiedKFold(cv, shuffle=shuffle, random_state=seed if shuffle else None).split(
        originals, y[originals]
    ):
        val = originals[val_part]
        if 0 < val_per_fold < len(val):
            val = np.sort(rng.choice(val, val_per_fold, replace=False))
        train = np.flatnonzero(np.isin(source, source[originals[train_part]]))
        folds.append((train, val))
    return folds


def _test_row(ctx: Context, search: _Search, row: Candidate) -> dict[str, Any]:
    """Fit the row's chain on all training rows and score it on the test set (the only use of test labels)."""
    start = time.perf_counter()
    X_train, y_train = ctx.store.read_xy(row.stage, "train")
    X_test, y_test = ctx.store.read_xy(row.stage, "test")
    k, weights = int(row.best_params["n_neighbors"]), row.best_params["weights"]
    searched = row.idm["candidates"] if row.idm else k
    distances, indices = ctx.client.compute(
        kneighbors(X_test.rechunk({0: _VAL_CHUNK, 1: -1}), X_train.rechunk({0: _TRAIN_CHUNK, 1: -1}), searched),
        sync=True,
    )
    idm_cost = None
    if row.idm:  # re-rank the candidates by IDM on the image stage, then vote among the k nearest
        images = row.idm["images"]
        rerank_start = time.perf_counter()
        indices, distances = idm_rerank(
            ctx.client,
            ctx.store.read(f"{images}/test/images").compute(),
            ctx.store.read(f"{images}/train/images").compute(),
            indices,
            row.idm["warp"],
            row.idm["context"],
        )
        indices, distances = indices[:, :k], distances[:, :k]
        idm_cost = {"distances_per_query": searched, "seconds": round(time.perf_counter() - rerank_start, 3)}
    y_train = y_train.compute()
    classes = np.unique(y_train)
    predicted = classes[np.argmax(vote(y_train[indices], distances, weights, classes), axis=1)]
    accuracy = float(np.mean(predicted == y_test.compute()))
    test_s = round(time.perf_counter() - start, 3)
    ctx.log(f"knn_best: {row.label}: test accuracy {accuracy:.4f} ({test_s:.0f} s)")
    return {
        "ingredient": row.label,
        "stage": row.stage,
        "idm": row.idm,
        "idm_cost": idm_cost,
        "features": int(X_train.shape[1]),
        "train_rows": int(X_train.shape[0]),
        "n_neighbors": k,
        "weights": weights,
        "cv_score": row.cv_score,
        "test_accuracy": accuracy,
        "stages_s": row.seconds["stages"],
        "cv_s": row.seconds["cv"],
        "test_s": test_s,
        "time_s": round(row.seconds["stages"] + row.seconds["cv"] + test_s, 3),
    }


def _base_chain(params: KNNBestParams) -> Chain:
    """A ``sample`` step first when the job asks for a subsample (quick runs and tests)."""
    if params.train_sample or params.test_sample:
        return (
            ("sample", {"train": int(params.train_sample), "test": int(params.test_sample), "seed": int(params.seed)}),
        )
    return ()


def _pca(n: int, power: float) -> dict[str, Any]:
    """Parameters of a ``pca`` step, fitted on the original (un-augmented) training images."""
    return {"n_components": int(n), "scale_power": float(power), "fit_on": "originals"}


def _copy_ids(store: Store, stage: str, n: int) -> np.ndarray:
    """Copy number of each training row (0 = original); all zeros for a stage without augmentation."""
    if store.has(f"{stage}/train/copy"):
        return store.read(f"{stage}/train/copy").compute()
    return np.zeros(n, dtype=np.int16)


def _chain_json(chain: Chain) -> list[dict[str, Any]]:
    """A chain as job-file style steps, for result.json (an IDM step re-ranks, it is no transform)."""
    return [{"rerank" if name == "idm" else "transform": name, **params} for name, params in chain]
