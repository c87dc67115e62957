"""``mnist-dask classify``: real MNIST test digits redrawn as dark-on-light PNG/JPEG/BMP files,
classified with the model of a real run; every kind of bad input is one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_dask.jobs.classify import load_digit, mnist_style

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_dask", *map(str, args)], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def run_dir(mnist_dir, tmp_path_factory) -> Path:
    """The knn_baseline run (k=5 uniform on the 60,000 real training images)."""
    root = tmp_path_factory.mktemp("classify")
    done = _cli(
        "run",
        REPO / "jobs" / "knn_baseline.toml",
        "--source",
        f"idx:{mnist_dir}",
        "--store",
        root / "mnist.zarr",
        "--run-dir",
        root / "run",
        "--workers",
        "2",
    )
    assert done.returncode == 0, done.stderr
    return root / "run"


def test_preprocessing_an_mnist_image_gives_it_back(mnist):
    correlations = [
        np.corrcoef(mnist_style(image.astype(float)).ravel(), image.ravel())[0, 1]
        for image in mnist["test_images"][:50]
    ]
    assert np.median(correlations) > 0.95 and np.mean(correlations) > 0.9


def _redrawn(digit: np.ndarray) -> np.ndarray:
    """A real MNIST digit redrawn dark-on-light: scaled to 100x100 on a 140x130 white page."""
    big = np.asarray(Image.fromarray(255 - digit).resize((100, 100), Image.Resampling.BICUBIC))
    page = np.full((140, 130), 255, np.uint8)
    page[25:125, 10:110] = big
    return page


def test_classifies_redrawn_test_digits(run_dir, mnist, tmp_path):
    paths, labels = [], []
    for i in range(10):
        page = _redrawn(mnist["test_images"][i])
        path = tmp_path / f"digit{i}.{('png', 'jpg', 'bmp')[i % 3]}"
        Image.fromarray(page).save(path)
        paths.append(path)
        labels.append(int(mnist["test_labels"][i]))
    done = _cli("classify", *paths, "--run", run_dir)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 10
    predicted = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert sum(p == t for p, t in zip(predicted, labels)) >= 9
    assert all("probability" in line for line in lines)


def test_bad_inputs_are_one_line_naming_the_file(run_dir, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6000), 255).save(huge)  # 48 megapixels: refused from its header
    good = tmp_path / "good.png"
    drawn = np.full((40, 40), 255, np.uint8)
    drawn[5:35, 18:22] = 0  # a "1"
    Image.fromarray(drawn).save(good)
    cases = [
        ((empty, "--run", run_dir), "empty.png"),
        ((text, "--run", run_dir), "notes.png"),
        ((huge, "--run", run_dir), "huge.png"),
        ((tmp_path / "missing.png", "--run", run_dir), "missing.png"),
        ((good, "--run", tmp_path), "result.json"),
    ]
    for args, name in cases:
        done = _cli("classify", *args)
        assert done.returncode == 2, (args, done.stderr)
        assert name in done.stderr and len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


# -- image files as phones and drawing programs write them ---------------------------------------
ORIENTATION = 0x0112  # the EXIF tag: how a viewer must turn the stored pixels to show them upright
#: EXIF orientation -> how the pixels are stored so that turning them as the tag says shows the digit upright
STORED_TURNED = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
INKS = {"black": (0, 0, 0), "blue": (20, 40, 200), "white": (255, 255, 255)}
ODD_DIGITS = range(10, 40)


def _rotated_with_exif(page: np.ndarray, orientation: int, path: Path) -> None:
    """Save the page turned, tagged with the EXIF orientation that turns it back (as a phone camera does)."""
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(page).transpose(STORED_TURNED[orientation]).save(path, exif=exif)


def _sixteen_bit(page: np.ndarray, path: Path) -> None:
    """Save the page as a 16-bit greyscale PNG (the same levels, times 257)."""
    image = Image.fromarray(page.astype(np.uint16) * 257)
    assert image.mode == "I;16"
    image.save(path)


def _ink_on_transparent(page: np.ndarray, ink: tuple[int, int, int], path: Path) -> None:
    """Save the page's ink as coloured strokes on a fully transparent background (RGBA, transparent = 0,0,0,0)."""
    alpha = 255 - page
    rgba = np.zeros((*page.shape, 4), np.uint8)
    rgba[..., :3] = np.where(alpha[..., None] > 0, np.array(ink, np.uint8), 0)
    rgba[..., 3] = alpha
    Image.fromarray(rgba).save(path)


@pytest.fixture(scope="module")
def odd_files(run_dir, mnist, tmp_path_factory) -> dict[str, list[tuple[Path, int, int]]]:
    """Real test digits written three ways, classified in one CLI call: kind -> (file, true label, predicted)."""
    folder = tmp_path_factory.mktemp("odd-images")
    files: dict[str, list[tuple[Path, int]]] = {"rotated": [], "16-bit": [], "transparent": []}
    for n, i in enumerate(ODD_DIGITS):
        page, label = _redrawn(mnist["test_images"][i]), int(mnist["test_labels"][i])
        orientation = (3, 6, 8)[n % 3]
        _rotated_with_exif(page, orientation, folder / f"rotated{i}-{orientation}.jpg")
        _sixteen_bit(page, folder / f"grey16-{i}.png")
        ink = list(INKS)[n % 3]
        _ink_on_transparent(page, INKS[ink], folder / f"ink{i}-{ink}.png")
        files["rotated"].append((folder / f"rotated{i}-{orientation}.jpg", label))
        files["16-bit"].append((folder / f"grey16-{i}.png", label))
        files["transparent"].append((folder / f"ink{i}-{ink}.png", label))
    done = _cli("classify", *(path for group in files.values() for path, _ in group), "--run", run_dir)
    assert done.returncode == 0, done.stderr
    predicted = {line.split(": ")[0]: int(line.split(": ")[1].split()[0]) for line in done.stdout.splitlines()}
    return {kind: [(path, label, predicted[str(path)]) for path, label in group] for kind, group in files.items()}


@pytest.mark.parametrize("kind", ["rotated", "16-bit", "transparent"])
def test_classifies_phone_rotated_16_bit_and_transparent_images(odd_files, kind):
    """EXIF-rotated JPEGs (orientations 3, 6, 8), 16-bit grey PNGs and black/blue/white ink on transparent
    PNGs are read as the digit a viewer shows: at least 27 of 30 real test digits right, as upright files are."""
    results = odd_files[kind]
    wrong = [f"{path.name}: {predicted} (true {label})" for path, label, predicted in results if predicted != label]
    assert len(results) == len(ODD_DIGITS) and len(wrong) <= 3, wrong


def test_exif_orientation_16_bit_and_transparency_give_the_same_digit_as_the_plain_file(mnist, tmp_path):
    """The preprocessing unit: each way of writing the page is read back as the plain 8-bit upright PNG."""
    page = _redrawn(mnist["test_images"][0])
    Image.fromarray(page).save(tmp_path / "plain.png")
    expected = load_digit(tmp_path / "plain.png")
    for orientation in STORED_TURNED:
        _rotated_with_exif(page, orientation, tmp_path / f"turned{orientation}.png")  # PNG: lossless, exact
        np.testing.assert_array_equal(load_digit(tmp_path / f"turned{orientation}.png"), expected)
    _sixteen_bit(page, tmp_path / "grey16.png")
    np.testing.assert_array_equal(load_digit(tmp_path / "grey16.png"), expected)
    for ink, colour in INKS.items():  # coloured ink has less contrast than black: the same shape, not the same levels
        _ink_on_transparent(page, colour, tmp_path / f"{ink}.png")
        read = load_digit(tmp_path / f"{ink}.png")
        assert np.corrcoef(read.ravel(), expected.ravel())[0, 1] > 0.99, ink
        if ink != "blue":  # float compositing: levels within 1
            assert np.abs(read.astype(int) - expected).max() <= 1, ink


# -- runs on transformed images ------------------------------------------------------------------
def _drawn_one(path: Path) -> Path:
    """A "1" drawn dark on a light 40x40 page, saved as an image file."""
    drawn = np.full((40, 40), 255, np.uint8)
    drawn[5:35, 18:22] = 0
    Image.fromarray(drawn).save(path)
    return path


def _knn_job(path: Path, steps: str) -> Path:
    """A k=3 k-NN job file whose training set is made by ``steps`` (TOML inline tables)."""
    path.write_text(f"experiment = 'knn'\n[params]\nsteps = [{steps}]\n[params.model]\nn_neighbors = 3\n")
    return path


def test_a_run_on_deskewed_blurred_images_sees_the_users_image_deskewed_and_blurred(run_dir, mnist, tmp_path):
    """A user's image is compared like with like: the printed digits and probabilities are scikit-learn's k-NN
    on the run's stored training rows with the query deskewed and blurred as they were (before the fix the raw
    query was compared with deskewed, blurred training images)."""
    from sklearn.neighbors import KNeighborsClassifier

    from mnist_dask.data.store import Store
    from mnist_dask.transforms import kernels

    store = run_dir.parent / "mnist.zarr"
    steps = "{ transform = 'sample', train = 3000, test = 100, seed = 1 }, { transform = 'deskew' }, "
    job = _knn_job(tmp_path / "deskewed.toml", steps + "{ transform = 'blur', sigma = 1.5 }")
    done = _cli("run", job, "--store", store, "--run-dir", tmp_path / "run", "--workers", "2")
    assert done.returncode == 0, done.stderr
    paths = []
    for i in ODD_DIGITS:
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(_redrawn(mnist["test_images"][i])).save(paths[-1])
    done = _cli("classify", *paths, "--run", tmp_path / "run")
    assert done.returncode == 0, done.stderr
    printed = [line.rsplit(": ", 1)[1] for line in done.stdout.strip().splitlines()]

    dataset = json.loads((tmp_path / "run" / "result.json").read_text())["dataset"]
    assert dataset.endswith("+deskew+blur1.5")
    X, y = Store(str(store)).read_xy(dataset, "train")
    model = KNeighborsClassifier(n_neighbors=3).fit(X.compute(), y.compute())
    queries = kernels.gaussian_blur(kernels.deskew(np.stack([load_digit(p) for p in paths])), 1.5)
    proba = model.predict_proba(queries.reshape(len(paths), -1))
    best = proba.argmax(axis=1)
    assert printed == [f"{model.classes_[i]} (probability {proba[row, i]:.2f})" for row, i in enumerate(best)]


def test_a_run_on_features_a_single_image_cannot_be_given_is_refused_in_one_line(run_dir, tmp_path):
    """Standardised pixels (scale) are 784 features like images, but a lone image has no training mean and
    spread applied: comparing it raw would be silently wrong, so classify refuses, naming the transform."""
    store = run_dir.parent / "mnist.zarr"
    steps = "{ transform = 'sample', train = 500, test = 50 }, { transform = 'scale' }"
    job = _knn_job(tmp_path / "scaled.toml", steps)
    done = _cli("run", job, "--store", store, "--run-dir", tmp_path / "run", "--workers", "2")
    assert done.returncode == 0, done.stderr
    _drawn_one(tmp_path / "one.png")
    done = _cli("classify", tmp_path / "one.png", "--run", tmp_path / "run")
    assert done.returncode == 2, done.stderr
    assert "'scale' in its chain" in done.stderr and str(tmp_path / "run") in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_run_whose_training_stage_was_dropped_says_so_in_one_line(run_dir, tmp_path):
    """Its chain cannot be read back from a stage that is gone: the line names the stage and says to run the job
    again (not that the run is on some transform classify does not take)."""
    store = run_dir.parent / "mnist.zarr"
    job = _knn_job(
        tmp_path / "dropped.toml", "{ transform = 'sample', train = 400, test = 40 }, { transform = 'shift' }"
    )
    done = _cli("run", job, "--store", store, "--run-dir", tmp_path / "run", "--workers", "2")
    assert done.returncode == 0, done.stderr
    dropped = _cli("drop", "derived/sample400-40", "--dependents", "--store", store)
    assert dropped.returncode == 0, dropped.stderr
    _drawn_one(tmp_path / "one.png")
    done = _cli("classify", tmp_path / "one.png", "--run", tmp_path / "run")
    assert done.returncode == 2, done.stderr
    assert (
        "derived/sample400-40" in done.stderr
        and "not in the store" in done.stderr
        and "run the job again" in done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_classify_and_report_take_a_run_id_as_status_does(run_dir, tmp_path):
    """``--run knn_baseline`` (a run id or job name under the store's runs folder) works as ``status`` takes it; it
    was refused as 'directory does not exist'."""
    import shutil

    store = run_dir.parent / "mnist.zarr"
    shutil.copytree(run_dir, tmp_path / "runs" / "knn_baseline")
    shutil.copytree(store, tmp_path / "mnist.zarr", symlinks=True)  # its runs folder is tmp_path/runs
    one = _drawn_one(tmp_path / "one.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_folder = _cli("classify", one, "--run", run_dir)
    for args in (["classify", one, "--run", "knn_baseline"], ["report", "knn_baseline"]):
        done = subprocess.run(
            [sys.executable, "-m", "mnist_dask", *map(str, args), "--store", str(tmp_path / "mnist.zarr")],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=elsewhere,
        )
        assert done.returncode == 0, done.stderr
        if args[0] == "classify":
            assert done.stdout == by_folder.stdout
        else:
            assert done.stdout.strip() == str(tmp_path / "runs" / "knn_baseline" / "report.html")
