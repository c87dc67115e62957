"""The k-NN study (notebooks 000, 002, 004): a dataset chain, an optional grid search, the exact k-NN scored on test.

Steps are transform stages in the store (skipped when complete); the grid search runs
one neighbour search per fold on the cluster and scores every candidate as a vote
(:mod:`mnist_dask.neighbors.search`); predictions are computed chunk by chunk on the
workers and written to ``<run dir>/predictions.zarr``; an optional sweep scores every k
from one neighbour search for the largest.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any, Literal

import dask.array as da
import numpy as np
import zarr
from dask.base import tokenize
from distributed import Client, span
from pydantic import AfterValidator, Field, Strict, field_validator

from mnist_dask.cluster import run_stage
from mnist_dask.data.store import Store
from mnist_dask.errors import UserError
from mnist_dask.experiments import Context, ParamsError, Result, experiment, stage_rows
from mnist_dask.experiments.common import misclassified_digits
from mnist_dask.experiments.metrics import classification_metrics
from mnist_dask.experiments.params import Count, Options, Positive, Weights, as_dict, default_list, nested, parameters
from mnist_dask.jobs.records import PREDICTIONS
from mnist_dask.neighbors.knn import KNNClassifier, kneighbors, vote
from mnist_dask.neighbors.search import grid_search, search_problem
from mnist_dask.report import spec
from mnist_dask.transforms.registry import TRANSFORMS, chain_problem, output_stage, run_transform
from mnist_dask.transforms.validation import resolve_params

DEFAULT_K = 5  # scikit-learn's KNeighborsClassifier()
DEFAULT_WEIGHTS: Weights = "uniform"
SAMPLE_DIGITS = 50  # test digits shown at the top of the report


def _transform_step(step: dict[str, Any]) -> dict[str, Any]:
    """``{transform = NAME, <its parameters>...}`` with the transform's defaults filled in and types checked."""
    name = step.get("transform")
    if not isinstance(name, str):
        raise ValueError("a step needs a 'transform' name")
    if name not in TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; choose from {', '.join(sorted(TRANSFORMS))}")
    try:
        return {
            "transform": name,
            **resolve_params(TRANSFORMS[name], {k: v for k, v in step.items() if k != "transform"}),
        }
    except UserError as exc:
        raise ValueError(str(exc)) from None


Step = Annotated[dict[str, Any], AfterValidator(_transform_step)]


@parameters
class KNNGrid:
    """The grid of a k-NN search (each list non-empty); what is left out is scikit-learn's default."""

    n_neighbors: Options[Positive] = default_list(DEFAULT_K)
    weights: Options[Weights] = default_list(DEFAULT_WEIGHTS)


@parameters
class GridSearch:
    """A cross-validated grid search, on raw images or on the job's dataset (group folds over shifted copies),
    on all training rows or the first ``rows``."""

    param_grid: KNNGrid
    cv: Annotated[int, Strict(), Field(ge=2)] = 5
    on: Literal["raw", "dataset"] = "raw"
    rows: Count = 0  # search on the first rows only (notebook 002: 10,000); 0: all


@parameters
class KNNModel:
    """The model scored on the test set; a value left out comes from the search's best (else k=5 uniform)."""

    n_neighbors: Positive | None = None
    weights: Weights | None = None


@parameters
class Sweep:
    """Test accuracy for each k (one neighbour search for the largest)."""

    n_neighbors: Options[Positive]
    weights: Weights = DEFAULT_WEIGHTS


@parameters
class KNNStudyParams:
    """The dataset chain (transform steps applied to raw), an optional search, the model, an optional sweep."""

    steps: list[Step] = default_list()
    search: GridSearch | None = None
    model: KNNModel = nested(KNNModel)
    sweep: Sweep | None = None

    @field_validator("steps")
    @classmethod
    def _chain_gives_a_dataset(cls, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each step must get what it needs from the one before; the chain must end in a dataset."""
        problem = chain_problem([step["transform"] for step in steps])
        if problem is not None:
            raise ValueError(problem)
        return steps


def check_rows(p: KNNStudyParams, rows: dict[str, int]) -> None:
    """Refuse what raw's row counts already rule out: a sample step asking for more rows than its input has, more
    neighbours than the dataset's training rows, a search on more first rows than it has; counted through every
    step, by the transforms' own row counts (a shift of radius 1 multiplies the training rows by 5)."""
    dataset, known = "raw", dict(rows)
    for i, step in enumerate(p.steps):
        name, options = step["transform"], _options(step)
        if name == "sample":
            _check_sample(i, options, known, dataset)
        known = TRANSFORMS[name].rows(options, known)
        dataset = output_stage(name, options, dataset)
    _check_model_fits(p, dataset, known["train"])
    if p.search is not None:
        _check_search_rows(p.search, *(("raw", rows["train"]) if p.search.on == "raw" else (dataset, known["train"])))


def _options(step: dict[str, Any]) -> dict[str, Any]:
    """A step's transform parameters (the step without its ``transform`` name)."""
    return {k: v for k, v in step.items() if k != "transform"}


def _check_sample(i: int, options: dict[str, Any], rows: dict[str, int], dataset: str) -> None:
    """Refuse ``steps[i]``, a sample, asking for more rows of a split than its input ``dataset`` has."""
    for split, kind in (("train", "training"), ("test", "test")):
        if options[split] > rows[split]:
            raise ParamsError(
                f"params.steps[{i}].{split} = {options[split]}: more than the {rows[split]} {kind} rows of {dataset}"
            )


def _check_search_rows(search: GridSearch, on: str, train_rows: int) -> None:
    """Refuse a search on more first rows than the training rows of ``on``, which ``X[:rows]`` would cut to fewer."""
    if search.rows > train_rows:
        raise ParamsError(f"params.search.rows = {search.rows}: more than the {train_rows} training rows of {on}")


@experiment("knn", KNNStudyParams, check=check_rows)
def knn_study(ctx: Context, p: KNNStudyParams) -> Result:
    """The k-NN study: transform chain, optional grid search, exact k-NN predictions on the test set."""
    store, client = ctx.store, ctx.client
    result: dict[str, Any] = {}
    dataset = "raw"
    for i, step in enumerate(p.steps):
        name, options = step["transform"], _options(step)
        if name == "sample":  # checked up front too, where the rows were known before the steps ran
            _check_sample(i, options, stage_rows(store, dataset), dataset)
        with ctx.stage(f"transform {name}"):
            outcome = run_transform(store, client, name, options, input_stage=dataset)
        dataset = outcome.stage
        ctx.log(f"transform {name}: {outcome.action} -> {dataset}")
    result["dataset"] = dataset
    _check_model_fits(p, dataset, store.read_xy(dataset, "train")[0].shape[0])

    model = {key: value for key, value in as_dict(p.model).items() if value is not None}
    if p.search is not None:
        with ctx.stage("search"), span("search"):
            on = "raw" if p.search.on == "raw" else dataset
            X, y = store.read_xy(on, "train")
            labels, groups = y.compute(), _groups(store, on)
            _check_search_rows(p.search, on, len(labels))  # checked up front too, where the rows were known
            if p.search.rows:  # the first rows, as GridSearchCV on X_train[:rows]
                X, labels = X[: p.search.rows], labels[: p.search.rows]
                groups = None if groups is None else groups[: p.search.rows]
            problem = search_problem(labels, p.search.cv, max(p.search.param_grid.n_neighbors), groups)
            if problem is not None:
                raise ParamsError(f"params.search.{problem[0]} = {problem[1]} of {on}")
            grid = as_dict(p.search.param_grid)
            found = grid_search(X, labels, grid, cv=p.search.cv, groups=groups, scheduler=client)
        result["search"] = {
            "dataset": on,
            "rows": int(X.shape[0]),
            "cv": p.search.cv,
            "group_folds": groups is not None,
            "best_params": found.best_params,
            "best_score": found.best_score,
            "cv_results": found.cv_results,
        }
        ctx.log(f"search: best {found.best_params}, cv accuracy {found.best_score:.4f}")
        model = {**found.best_params, **model}
    model = {"n_neighbors": DEFAULT_K, "weights": DEFAULT_WEIGHTS, **model}

    X_train, y_train = store.read_xy(dataset, "train")
    X_test, y_test = store.read_xy(dataset, "test")
    y_true = y_test.compute()
    result["model"] = {
        "estimator": "KNNClassifier (exact, blocked)",
        **model,
        "train_rows": int(X_train.shape[0]),
        "train_shape": [int(n) for n in X_train.shape],
        "train_size": int(X_train.size),
        "test_rows": int(X_test.shape[0]),
    }
    with ctx.stage("predict"):
        y_pred = _predict_to_zarr(KNNClassifier(**model).fit(X_train, y_train), X_test, ctx.run_dir, client)
    result["metrics"] = classification_metrics(y_true, y_pred)
    ctx.log(f"predict: test accuracy {result['metrics']['test_accuracy']:.4f}")

    if p.sweep is not None:
        with ctx.stage("sweep"):
            result["sweep"] = _k_sweep(X_train, y_train.compute(), X_test, y_true, p.sweep, client)
    result["report"] = _displays(result, y_true, y_pred, _image_stage(store, dataset, len(y_true)))
    return result


def _displays(result: Result, y_true: np.ndarray, y_pred: np.ndarray, image_stage: str) -> list[spec.Display]:
    """Test digits, the confusion matrix, misclassified digits, per-class scores, the search, the sweep, the report."""
    metrics = result["metrics"]
    shown = np.arange(min(SAMPLE_DIGITS, len(y_true)))
    displays = [
        spec.digits(
            "Sample test digits",
            [spec.stored_digits("test", shown, captions=[str(d) for d in y_true[shown]], stage=image_stage)],
            caption=f"the first {len(shown)} test images of {image_stage}, titled with their label",
        ),
        spec.confusion_matrix("Confusion matrix", metrics["confusion_matrix"], caption="rows true, columns predicted"),
        spec.confusion_matrix(
            "Errors by true digit",
            metrics["confusion_matrix"],
            normalize="true",
            errors_only=True,
            caption="each row divided by its count of test digits, the diagonal set to 0 to show only the errors",
        ),
    ]
    wrong = np.flatnonzero(y_true != y_pred)
    displays += misclassified_digits(wrong, lambda i: f"#{i} {y_true[i]}→{y_pred[i]}", stage=image_stage)
    per_class = metrics["per_class"]
    displays.append(
        spec.records(
            "Scores per class",
            [{"class": digit, **scores} for digit, scores in per_class.items()],
        )
    )
    if "search" in result:
        displays.extend(_search_displays(result["search"]))
    if "sweep" in result:
        by_k = result["sweep"]["test_accuracy_by_k"]
        displays.append(
            spec.line_plot(
                "Test accuracy by k",
                [int(k) for k in by_k],
                {"test accuracy": list(by_k.values())},
                xlabel=f"k ({result['sweep']['weights']} weights)",
                ylabel="test accuracy",
                markers=True,
            )
        )
    displays.append(spec.text("Classification report", metrics["classification_report"]))
    return displays


def _search_displays(search: dict[str, Any]) -> list[spec.Display]:
    """The grid search's candidates (the best marked) and, over several k, mean CV accuracy by k per weighting."""
    results = search["cv_results"]
    params, ranks = results["params"], results["rank_test_score"]
    rows = [
        [p["n_neighbors"], p["weights"], mean, std, rank]
        for p, mean, std, rank in zip(params, results["mean_test_score"], results["std_test_score"], ranks)
    ]
    displays = [
        spec.table(
            "Grid search",
            ["k", "weights", "mean CV accuracy", "std", "rank"],
            rows,
            highlight=int(np.argmin(ranks)),
            caption=f"{search['cv']}-fold cross-validation on {search['dataset']}; the best candidate marked",
        )
    ]
    ks = sorted({p["n_neighbors"] for p in params})
    if len(ks) > 1:
        mean = {(p["n_neighbors"], p["weights"]): m for p, m in zip(params, results["mean_test_score"])}
        weights = list(dict.fromkeys(p["weights"] for p in params))
        series = {w: [mean.get((k, w), float("nan")) for k in ks] for w in weights}
        displays.append(
            spec.line_plot(
                "Grid search: CV accuracy by k", ks, series, xlabel="k", ylabel="mean CV accuracy", markers=True
            )
        )
    return displays


def _image_stage(store: Store, dataset: str, n_test: int) -> str:
    """Where the test digits can be drawn from: raw when the dataset keeps raw's test rows, else the dataset."""
    return "raw" if store.read("raw/test/labels").shape[0] == n_test else dataset


def _check_model_fits(p: KNNStudyParams, dataset: str, train_rows: int) -> None:
    """Refuse a model or sweep asking for more neighbours than the dataset has training rows (before any work)."""
    if p.model.n_neighbors is not None and p.model.n_neighbors > train_rows:
        raise ParamsError(
            f"params.model.n_neighbors = {p.model.n_neighbors}: more neighbours than the {train_rows} "
            f"training rows of {dataset}"
        )
    if p.sweep is not None and max(p.sweep.n_neighbors) > train_rows:
        raise ParamsError(
            f"params.sweep.n_neighbors = {max(p.sweep.n_neighbors)}: more neighbours than the {train_rows} "
            f"training rows of {dataset}"
        )
    if p.search is None and p.model.n_neighbors is None and train_rows < DEFAULT_K:
        raise ParamsError(
            f"params.model.n_neighbors: the default {DEFAULT_K} neighbours exceed the {train_rows} training rows "
            f"of {dataset}; set a smaller one"
        )


def _predict_to_zarr(model: KNNClassifier, X_test: da.Array, run_dir: Path, client: Client) -> np.ndarray:
    """Predict chunk by chunk on the workers, writing probabilities and labels to predictions.zarr."""
    target = run_dir / PREDICTIONS
    shutil.rmtree(target, ignore_errors=True)
    proba = model.predict_proba(X_test)
    predicted = da.map_blocks(
        _argmax_class,
        proba,
        classes=model.classes_,
        drop_axis=1,
        dtype=model.classes_.dtype,
        name=f"knn-predicted-{tokenize(proba.name, model.classes_)}",
    )
    run_stage(
        client,
        "predict",
        [
            proba.to_zarr(str(target), component="proba", overwrite=True, compute=False),
            predicted.to_zarr(str(target), component="predicted", overwrite=True, compute=False),
        ],
    )
    _check_every_chunk_is_here(target)
    return da.from_zarr(str(target), component="predicted").compute()


def _check_every_chunk_is_here(target: Path) -> None:
    """Refuse predictions some of whose chunks this process cannot see: the workers wrote them to a disk
    of their own, and zarr would read the missing chunks as zeros. The probabilities are the array
    checked: each of their rows sums to 1, so no chunk of them is ever left out as empty."""
    array = zarr.open_array(str(target), path="proba", mode="r")
    if array.nchunks_initialized < array.nchunks:
        raise UserError(
            f"{target}: {array.nchunks - array.nchunks_initialized} of {array.nchunks} chunks the workers wrote "
            "are missing here; the run folder must be on a disk this machine and the workers share "
            "(choose one with --run-dir)"
        )


def _argmax_class(proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The most probable class of each row (the first on ties, as scikit-learn's predict)."""
    return classes[np.argmax(proba, axis=1)]


def _k_sweep(
    X_train: da.Array, y_train: np.ndarray, X_test: da.Array, y_true: np.ndarray, sweep: Sweep, client: Client
) -> dict[str, Any]:
    """Test accuracy for every k in the sweep from one neighbour search for the largest k."""
    ks = sorted(sweep.n_neighbors)
    with span("sweep"):
        distances, indices = client.compute(kneighbors(X_test, X_train, ks[-1]), sync=True)
    classes = np.unique(y_train)
    accuracy = {}
    for k in ks:
        proba = vote(y_train[indices[:, :k]], distances[:, :k], sweep.weights, classes)
        accuracy[str(k)] = float(np.mean(classes[np.argmax(proba, axis=1)] == y_true))
    return {"weights": sweep.weights, "test_accuracy_by_k": accuracy}


def _groups(store: Store, stage: str) -> np.ndarray | None:
    """Source image of each row when a dataset holds several copies of an image, for group folds."""
    if stage == "raw":
        return None
    source = store.read(f"{stage}/train/source_index").compute()
    return source if len(np.unique(source)) < len(source) else None
