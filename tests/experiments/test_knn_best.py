"""The ``knn_best`` experiment: its group folds, its job file, and a small real run end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from support import ReportPage, write_idx_files

from mnist_dask.experiments.knn_best import group_folds
from mnist_dask.jobs.spec import load_job

REPO = Path(__file__).resolve().parents[2]
INGREDIENTS = ["raw", "+deskew", "+blur", "+PCA", "+shifts", "+rotations", "+IDM"]


def test_job_file_parses_with_its_search_space():
    job = load_job(REPO / "jobs" / "knn_best.toml")
    assert job.experiment == "knn_best"
    assert job.params.train_sample == 0 and job.params.test_sample == 0  # the full 60,000 / 10,000
    assert job.params.cv >= 2 and job.params.rotation_degrees and job.params.pca_sizes


def test_group_folds_keep_every_copy_of_an_image_on_one_side():
    n, copies = 600, 7
    source = np.tile(np.random.default_rng(1).permutation(10_000)[:n], copies)
    copy = np.repeat(np.arange(copies), n)
    y = np.tile(np.arange(n) % 10, copies)
    folds = group_folds(source, copy, y, cv=5, val_per_fold=50, seed=0)
    seen = []
    for train, val in folds:
        assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
        assert len(val) == 50 and np.all(copy[val] == 0)  # validation rows are originals only
        assert not np.isin(source[val], source[train]).any()  # no copy of a validation image trains
        held_out = n - len(np.unique(source[train]))
        assert held_out == n // 5 and len(train) == (n - held_out) * copies  # every copy of the others
        seen.append(source[val])
    assert len(np.unique(np.concatenate(seen))) == 5 * 50


def test_group_folds_hold_out_stretches_of_the_training_order_unless_shuffled():
    n = 1000
    source, copy, y = np.arange(n), np.zeros(n, dtype=int), np.arange(n) % 10
    in_order = group_folds(source, copy, y, cv=5, val_per_fold=0, seed=0)
    for fold, (train, val) in enumerate(in_order):  # a writer's neighbouring digits stay on one side
        assert np.array_equal(val, np.arange(fold * 200, (fold + 1) * 200))
        assert np.array_equal(train, np.setdiff1d(np.arange(n), val))
    shuffled = group_folds(source, copy, y, cv=5, val_per_fold=0, seed=0, shuffle=True)
    assert not np.array_equal(shuffled[0][1], in_order[0][1])
    assert np.array_equal(np.sort(np.concatenate([val for _, val in shuffled])), np.arange(n))


def run_job(tmp_path: Path, job_text: str, source: Path) -> tuple[Path, dict]:
    """``mnist-dask run`` of a knn_best job file on the default local cluster of 2 workers; (run folder, result)."""
    job = tmp_path / "knn_best_small.toml"
    job.write_text(job_text)
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_dask",
            "run",
            str(job),
            "--source",
            f"idx:{source}",
            "--store",
            str(tmp_path / "mnist.zarr"),
            "--run-dir",
            str(run_dir),
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return run_dir, json.loads((run_dir / "result.json").read_text())


def test_small_run_end_to_end_reports_the_ablation_table(tmp_path, mnist_dir):
    run_dir, result = run_job(
        tmp_path,
        'experiment = "knn_best"\n[params]\ntrain_sample = 2000\ntest_sample = 300\ncv = 3\n'
        "cv_val_per_fold = 200\nn_neighbors = [1, 3, 5]\npca_sizes = [20]\npca_scale_powers = [0.0, 0.25]\n"
        "idm_candidates = [4, 8]\n",  # 4 < max k: searched as 5
        mnist_dir,
    )
    table = result["ablation"]
    assert [row["ingredient"] for row in table] == INGREDIENTS
    assert [row["train_rows"] for row in table] == [2000] * 4 + [10_000, 14_000, 2000]
    assert table[3]["features"] == 20 and table[0]["features"] == 784
    idm = table[6]["idm"]
    assert table[6]["stage"] in (table[3]["stage"], table[5]["stage"])  # re-ranks +PCA's or +rotations'
    assert idm["warp"] in (1, 2)
    assert table[6]["stage"] == f"{idm['images']}+pca20" or table[6]["stage"].startswith(f"{idm['images']}+pca20p")
    assert idm["candidates"] in (5, 8) and table[6]["idm_cost"]["distances_per_query"] == idm["candidates"]
    assert table[6]["idm_cost"]["seconds"] > 0 and all(row["idm_cost"] is None for row in table[:6])
    for row in table:
        assert 0.8 < row["cv_score"] <= 1 and 0.8 < row["test_accuracy"] <= 1 and row["time_s"] > 0
    chosen = max(table, key=lambda row: row["cv_score"])
    assert result["metrics"]["test_accuracy"] == chosen["test_accuracy"]
    assert result["model"]["dataset"] == chosen["stage"]
    candidates = result["search"]["candidates"]
    # raw, deskew, blur, 2 PCA scalings, shifts, rotations; IDM on +PCA's and +rotations' neighbours
    # (on each one's images before PCA), warps 1 and 2 x 5 and 8 candidates
    assert len(candidates) == 15
    blur_images, rotated_images = table[2]["stage"], table[5]["stage"].rsplit("+pca", 1)[0]
    assert sorted((c["idm"]["images"], c["idm"]["candidates"], c["idm"]["warp"]) for c in candidates if c["idm"]) == [
        (images, n, warp) for images in sorted([blur_images, rotated_images]) for n in (5, 8) for warp in (1, 2)
    ]
    assert all(c["stage"].startswith(c["idm"]["images"] + "+pca") for c in candidates if c["idm"])
    assert all(len(c["cv_results"]["params"]) == 6 for c in candidates)  # 3 k x 2 weights each
    page = ReportPage((run_dir / "report.html").read_text())
    ablation = page.tables["Ablation"]
    assert ablation["header"] == [
        "ingredient",
        "features",
        "train rows",
        "k",
        "weights",
        "IDM re-rank",
        "CV score",
        "test accuracy",
        "time (s)",
    ]
    assert [row[0] for row in ablation["rows"]] == INGREDIENTS and ablation["rows"][4][2] == "10,000"
    assert ablation["highlight"] == table.index(chosen)  # the chosen pipeline is the marked row
    assert ablation["rows"][table.index(chosen)][7] == f"{result['metrics']['test_accuracy']:.4f}"
    assert ablation["rows"][0][5] == "—" and ablation["rows"][6][5].startswith(f"warp {table[6]['idm']['warp']},")
    assert len(page.tables["Search candidates (cross-validated on the training set)"]["rows"]) == len(candidates)
    assert page.facts("Search")["param_grid"] == "n_neighbors=[1, 3, 5], weights=[uniform, distance]"


def test_runs_unchanged_on_other_28x28_ten_class_images(tmp_path, mnist):
    """Fashion-MNIST-shaped data (no MNIST-specific constant outside the job file): light
    backgrounds, transposed shapes and renamed classes, through every ingredient."""
    rng = np.random.default_rng(1)
    train, test = rng.choice(60_000, 1500, replace=False), rng.choice(10_000, 200, replace=False)
    relabel = np.array([3, 8, 0, 5, 9, 1, 7, 2, 6, 4], dtype=np.uint8)
    other = {
        "train_images": 255 - mnist["train_images"][train].transpose(0, 2, 1),
        "train_labels": relabel[mnist["train_labels"][train]],
        "test_images": 255 - mnist["test_images"][test].transpose(0, 2, 1),
        "test_labels": relabel[mnist["test_labels"][test]],
    }
    source = write_idx_files(tmp_path / "other", other)
    _, result = run_job(
        tmp_path,
        'experiment = "knn_best"\n[params]\ncv = 3\ncv_val_per_fold = 100\nn_neighbors = [1, 3]\n'
        "pca_sizes = [20]\npca_scale_powers = [0.25]\nidm_candidates = [6]\nidm_warps = [1]\n",
        source,
    )
    table = result["ablation"]
    assert [row["ingredient"] for row in table] == INGREDIENTS
    assert [row["train_rows"] for row in table] == [1500] * 4 + [7500, 10_500, 1500]
    assert all(0.5 < row["cv_score"] <= 1 and 0.5 < row["test_accuracy"] <= 1 for row in table)
    assert len(result["search"]["candidates"]) == 6 + 2  # one option per ingredient; IDM on +PCA's and +rotations'


def test_vote_search_scores_equal_scikit_learn_fitted_on_each_fold(mnist):
    import dask.array as da
    from distributed import Client, LocalCluster
    from sklearn.neighbors import KNeighborsClassifier

    from mnist_dask.neighbors.search import fold_neighbors, vote_search
    from mnist_dask.transforms.kernels import shift_images

    n = 900
    images = mnist["train_images"][:n]
    X = np.concatenate([images, shift_images(images, 1, 0), shift_images(images, 0, -1)]).reshape(3 * n, -1)
    y = np.tile(mnist["train_labels"][:n], 3)
    source, copy = np.tile(np.arange(n), 3), np.repeat(np.arange(3), n)
    folds = group_folds(source, copy, y, cv=3, val_per_fold=100, seed=0)
    grid = {"n_neighbors": [1, 3, 4], "weights": ["uniform", "distance"]}
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, Client(cluster) as client:
        tables = fold_neighbors(da.from_array(X, chunks=(1000, -1)), folds, 4, client)
        found = vote_search(tables, y, folds, grid, client)
    results, score = found.cv_results, found.best_score
    for params, mean in zip(results["params"], results["mean_test_score"]):
        expected = np.mean(
            [KNeighborsClassifier(**params).fit(X[train], y[train]).score(X[val], y[val]) for train, val in folds]
        )
        assert abs(mean - expected) <= 0.01 + 1e-9  # equal up to the order of exact distance ties
    assert score == max(results["mean_test_score"])
