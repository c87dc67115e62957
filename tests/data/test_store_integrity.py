"""A damaged or foreign store never yields a wrong result: exact data, or one line naming what is wrong.

Reads check every chunk against the checksum its stage recorded; writers refuse any location
that is not an mnist-dask store; damaged metadata is named by its file; ``drop`` removes a
stage. Library tests use the module's real LocalCluster; CLI tests run the command as a
subprocess on its default path (its own one-worker LocalCluster where it needs one).
A hypothesis test damages random files of a complete store and reads everything back.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from store_damage import DAMAGES, assert_user_error, balanced_small_mnist, cli, damage, snapshot

from mnist_dask.data.checksums import CHUNK_MD5_KEY
from mnist_dask.data.info import describe
from mnist_dask.data.ingest import ingest
from mnist_dask.data.layout import ATTRS_KEY, ROOT_KEY
from mnist_dask.data.sources import Source
from mnist_dask.data.store import Store
from mnist_dask.data.verify import verify_store
from mnist_dask.errors import UserError
from mnist_dask.transforms.registry import run_transform

CHUNK = 16  # rows per chunk: 40 training rows make chunks of 16, 16 and 8


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def idx_folder(tmp_path_factory) -> Path:
    return balanced_small_mnist().write_idx(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, client, idx_folder) -> Path:
    """A complete store: raw (chunks of 16 rows) and derived/deskew computed from it."""
    path = tmp_path_factory.mktemp("pristine") / "mnist.zarr"
    store = Store(str(path))
    ingest(Source("idx", (str(idx_folder),)), store, client, chunk_size=CHUNK)
    run_transform(store, client, "deskew")
    return path


@pytest.fixture(scope="module")
def originals(pristine) -> dict[str, np.ndarray]:
    """Every array of the pristine store, read with Zarr alone."""
    root = zarr.open_group(str(pristine), mode="r")
    return {path: node[...] for path, node in root.members(max_depth=None) if isinstance(node, zarr.Array)}


@pytest.fixture
def copy(pristine, tmp_path) -> Path:
    """A private copy of the pristine store to damage."""
    target = tmp_path / "mnist.zarr"
    shutil.copytree(pristine, target)
    return target


def _read_all(store: Store, client, paths) -> dict[str, np.ndarray]:
    return dict(zip(paths, client.compute([store.read(p) for p in paths], sync=True)))


def _one_line(exc: pytest.ExceptionInfo[UserError], *fragments: str) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- verified reads ---------------------------------------------------------------------
def test_every_read_of_an_intact_store_gives_exactly_what_was_written(pristine, originals, client):
    got = _read_all(Store(str(pristine)), client, list(originals))
    for path, array in originals.items():
        assert got[path].dtype == array.dtype and np.array_equal(got[path], array), path


def test_a_deleted_chunk_file_is_an_error_naming_it_never_zeros(copy, client):
    (copy / "raw/train/images/c/1/0/0").unlink()
    assert not zarr.open_array(str(copy / "raw/train/images"), mode="r")[16:32].any()  # what Zarr alone returns
    store = Store(str(copy))
    with pytest.raises(UserError) as exc:
        client.compute(store.read_xy("raw", "train")[0], sync=True)
    _one_line(
        exc,
        f"{copy}/raw/train/images/c/1/0/0: chunk 1.0.0 of raw/train/images (rows 16-31)",
        "differs from its recorded checksum",
        f"'mnist-dask ingest --force --store {copy}'",
    )


def test_a_stage_computed_from_a_damaged_chunk_is_refused_and_stays_incomplete(copy, client):
    (copy / "raw/train/images/c/2/0/0").unlink()
    store = Store(str(copy))
    with pytest.raises(UserError, match=r"chunk 2\.0\.0 of raw/train/images \(rows 32-39\)"):
        run_transform(store, client, "blur")
    assert not store.is_complete("derived/blur1")


def test_a_changed_chunk_that_still_decodes_is_caught(copy, originals, client):
    chunk = copy / "raw/test/images/c/0/0/0"
    damage(chunk, "flip_byte", position=5000, value=0xFF)
    changed = zarr.open_array(str(copy / "raw/test/images"), mode="r")[:16]
    assert not np.array_equal(changed, originals["raw/test/images"][:16])  # Zarr decodes it, silently wrong
    with pytest.raises(UserError) as exc:
        client.compute(Store(str(copy)).read("raw/test/images"), sync=True)
    _one_line(exc, "raw/test/images/c/0/0/0: chunk 0.0.0 of raw/test/images (rows 0-15) differs")


def test_a_truncated_chunk_is_an_error_saying_it_cannot_be_decoded(copy, client):
    damage(copy / "derived/deskew/train/images/c/0/0/0", "truncate", position=40, value=0)
    with pytest.raises(UserError) as exc:
        client.compute(Store(str(copy)).read("derived/deskew/train/images"), sync=True)
    _one_line(
        exc,
        "chunk 0.0.0 of derived/deskew/train/images (rows 0-15) cannot be decoded",
        f"'mnist-dask drop derived/deskew --store {copy}'",
    )


def test_an_array_without_checksums_is_refused_before_any_read(copy):
    array = zarr.open_array(str(copy / "raw/train/labels"), mode="r+")
    del array.attrs[CHUNK_MD5_KEY]
    with pytest.raises(UserError) as exc:
        Store(str(copy)).read("raw/train/labels")
    _one_line(exc, f"{copy}/raw/train/labels: no usable chunk checksums recorded")


def test_checksums_for_another_chunk_grid_are_refused(copy):
    array = zarr.open_array(str(copy / "raw/train/labels"), mode="r+")
    array.attrs[CHUNK_MD5_KEY] = array.attrs[CHUNK_MD5_KEY][:2]
    with pytest.raises(UserError, match="no usable chunk checksums"):
        Store(str(copy)).read("raw/train/labels")


@pytest.mark.parametrize(
    "file, array, remedy",
    [
        ("raw/train/images/zarr.json", "raw/train/images", "ingest --force"),
        ("raw/zarr.json", "raw/train/images", "ingest --force"),
        ("derived/deskew/test/labels/zarr.json", "derived/deskew/test/labels", "drop derived/deskew"),
    ],
)
def test_a_garbled_metadata_file_is_named_by_reads_info_and_verify(copy, client, file, array, remedy):
    (copy / file).write_text('{"zarr_format": 3, "node_ty')
    store = Store(str(copy))
    with pytest.raises(UserError) as exc:
        store.read(array)
    _one_line(exc, f"{copy}/{file}: corrupt Zarr metadata (not valid JSON", remedy)
    with pytest.raises(UserError) as exc:
        describe(store)
    _one_line(exc, f"{copy}/{file}: corrupt Zarr metadata")
    _, problems = verify_store(store, client)
    assert file in [p.where for p in problems]


def test_a_deleted_group_metadata_file_is_found_by_verify_while_reads_stay_exact(copy, originals, client):
    (copy / "raw/train/zarr.json").unlink()
    store = Store(str(copy))
    assert np.array_equal(client.compute(store.read("raw/train/images"), sync=True), originals["raw/train/images"])
    _, problems = verify_store(store, client)
    assert [(p.where, p.what) for p in problems] == [
        ("raw/train/zarr.json", "missing Zarr metadata (the file was deleted)")
    ]
    with pytest.raises(UserError, match="raw/train/zarr.json: missing Zarr metadata"):
        describe(store)


def test_a_deleted_array_metadata_file_is_named_by_reads_and_verify(copy, client):
    (copy / "raw/train/images/zarr.json").unlink()
    store = Store(str(copy))
    with pytest.raises(UserError) as exc:
        store.read_xy("raw", "train")
    _one_line(exc, f"{copy}/raw/train/images/zarr.json: missing Zarr metadata", "ingest --force")
    _, problems = verify_store(store, client)
    assert [(p.where, p.what) for p in problems] == [
        ("raw/train/images/zarr.json", "missing Zarr metadata (the file was deleted)")
    ]


def test_an_array_the_stage_wrote_that_is_gone_is_named_by_reads_and_verify(copy, client):
    shutil.rmtree(copy / "derived/deskew/train/source_index")
    store = Store(str(copy))
    with pytest.raises(UserError) as exc:
        store.read("derived/deskew/train/source_index")
    _one_line(
        exc,
        f"{copy}/derived/deskew/train/source_index: missing, though stage derived/deskew wrote it",
        "drop derived/deskew",
    )
    _, problems = verify_store(store, client)
    assert [(p.where, p.what) for p in problems] == [
        ("derived/deskew/train/source_index", "array written by the stage is missing")
    ]


def test_force_rewrites_a_stage_whose_metadata_is_garbled(copy, originals, client, idx_folder):
    (copy / "raw/zarr.json").write_bytes(b"\xff\xfe")
    store = Store(str(copy))
    with pytest.raises(UserError, match="raw/zarr.json: corrupt Zarr metadata"):
        ingest(Source("idx", (str(idx_folder),)), store, client, chunk_size=CHUNK)
    assert ingest(Source("idx", (str(idx_folder),)), store, client, chunk_size=CHUNK, force=True).action == "written"
    got = _read_all(store, client, ["raw/train/images", "raw/test/labels"])
    assert np.array_equal(got["raw/train/images"], originals["raw/train/images"])
    assert np.array_equal(got["raw/test/labels"], originals["raw/test/labels"])


# -- only our own stores are written ------------------------------------------------------
def _foreign_v2(path: Path) -> None:
    zarr.open_group(str(path), mode="w", zarr_format=2).create_array("images", shape=(3,), dtype="i4")[:] = 7


def _foreign_v3(path: Path) -> None:
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.create_array("raw/train/images", shape=(3,), dtype="i4")[:] = 7  # where ingest would write


def _foreign_array(path: Path) -> None:
    zarr.create_array(str(path), shape=(3,), dtype="i4", zarr_format=3)[:] = 7


def _notes(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("not a store")


def _file(path: Path) -> None:
    path.write_text("a regular file")


FOREIGN = {
    "zarr-v2-store": (_foreign_v2, "is a Zarr v2 store of another tool"),
    "zarr-v3-store": (_foreign_v3, "is a Zarr store that mnist-dask did not create"),
    "zarr-v3-array": (_foreign_array, "is a Zarr array, not an mnist-dask store"),
    "non-empty-folder": (_notes, "is a folder that is not empty and holds no mnist-dask store"),
    "regular-file": (_file, "is a file, not a Zarr store folder"),
}


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_ingest_refuses_anything_that_is_not_an_mnist_dask_store_and_leaves_it_untouched(kind, idx_folder, tmp_path):
    make, message = FOREIGN[kind]
    target = tmp_path / "target"
    make(target)
    before = snapshot(target) if target.is_dir() else target.read_bytes()
    done = cli("ingest", "--source", f"idx:{idx_folder}", "--store", target, "--workers", 1, cwd=tmp_path)
    assert_user_error(done, f"{target}: {message}", "choose a new or empty")
    assert (snapshot(target) if target.is_dir() else target.read_bytes()) == before


@pytest.mark.parametrize("kind", ["zarr-v3-store", "non-empty-folder"])
def test_every_writer_and_reader_refuses_a_foreign_store(kind, tmp_path, client):
    make, message = FOREIGN[kind]
    target = tmp_path / "target"
    make(target)
    store = Store(str(target))
    for action in (
        lambda: store.begin_stage("raw"),
        lambda: store.drop_stage("raw"),
        lambda: run_transform(store, client, "deskew"),
        lambda: store.read("raw/train/images"),
        lambda: describe(store),
    ):
        with pytest.raises(UserError, match=message):
            action()


def test_an_empty_folder_becomes_a_marked_store(idx_folder, tmp_path, client):
    target = tmp_path / "empty"
    target.mkdir()
    ingest(Source("idx", (str(idx_folder),)), Store(str(target)), client, chunk_size=CHUNK)
    assert zarr.open_group(str(target), mode="r").attrs[ROOT_KEY]["format"] == 1


def test_a_store_made_before_the_marker_is_read_and_marked_on_the_next_write(copy, originals, client):
    root = zarr.open_group(str(copy), mode="r+")
    del root.attrs[ROOT_KEY]
    store = Store(str(copy))
    assert np.array_equal(client.compute(store.read("raw/test/images"), sync=True), originals["raw/test/images"])
    run_transform(store, client, "blur")
    assert ROOT_KEY in zarr.open_group(str(copy), mode="r").attrs


def test_a_garbled_root_metadata_file_is_named(copy):
    damage(copy / "zarr.json", "flip_byte", position=0, value=0xFF)
    with pytest.raises(UserError) as exc:
        Store(str(copy)).read("raw/train/images")
    _one_line(exc, f"{copy}/zarr.json: corrupt Zarr metadata", "move it away")


# -- ingest of empty inputs ----------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_idx_files_with_zero_images_are_refused_and_nothing_is_written(tmp_path, gz):
    small = balanced_small_mnist()
    empty = {
        "train-images": small.images_bytes(np.zeros((0, 28, 28), np.uint8), gz=gz),
        "train-labels": small.labels_bytes(np.zeros(0, np.uint8), gz=gz),
    }
    folder = small.write_idx(tmp_path / "idx", gz=gz, overrides=empty)
    store = tmp_path / "s.zarr"
    done = cli("ingest", "--source", f"idx:{folder}", "--store", store, "--workers", 1, cwd=tmp_path)
    suffix = ".gz" if gz else ""
    assert_user_error(done, f"{folder}/train-images-idx3-ubyte{suffix}: holds 0 images")
    assert not store.exists()


# -- dropping a stage ----------------------------------------------------------------------
def test_drop_removes_an_incomplete_stage_so_verify_passes_again(copy, client, tmp_path):
    store = Store(str(copy))
    store.begin_stage("derived/down-14")  # what a negative downscale factor used to leave behind
    assert [p.where for p in verify_store(store, client)[1]] == ["derived/down-14"]
    done = cli("drop", "derived/down-14", "--store", copy, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{copy}: dropped derived/down-14\n"
    assert verify_store(store, client)[1] == []
    assert store.stages() == ["derived/deskew", "raw"]


def test_a_stage_whose_write_was_cut_short_is_one_line_in_info_and_verify(copy, tmp_path):
    """Its arrays hold partial data and no checksums yet: naming each of them would only be noise."""
    group = zarr.open_group(str(copy / "derived/deskew"), mode="r+")
    group.attrs[ATTRS_KEY] = {**group.attrs[ATTRS_KEY], "complete": False}  # what Ctrl-C mid-write leaves
    shown = cli("info", copy, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    deskew = [line for line in shown.stdout.splitlines() if "derived/deskew" in line]
    assert deskew == [
        "  stage derived/deskew: INCOMPLETE (being written now, or its writing was interrupted; "
        "if no run is writing it, run it again or drop it)"
    ]
    checked = cli("verify", copy, "--workers", 1, cwd=tmp_path)
    assert checked.returncode == 2
    assert checked.stdout.splitlines() == [
        "derived/deskew: stage is incomplete (being written now, or its writing was interrupted); "
        f"if no run is writing it, drop the stage with 'mnist-dask drop derived/deskew --store {copy}'; "
        "the next run re-creates it"
    ]
    assert ": 1 problem(s) found in " in checked.stderr.splitlines()[-1]  # the stage once, not once per array


def test_drop_refuses_a_stage_others_were_computed_from_unless_asked(copy, tmp_path):
    before = snapshot(copy)
    done = cli("drop", "raw", "--store", copy, cwd=tmp_path)
    assert_user_error(done, f"{copy}: 1 stage(s) were computed from raw (derived/deskew)", "--dependents")
    assert snapshot(copy) == before
    done = cli("drop", "raw", "--dependents", "--store", copy, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{copy}: dropped derived/deskew", f"{copy}: dropped raw"]
    assert Store(str(copy)).stages() == []


@pytest.mark.parametrize(
    "stage, message",
    [("derived/nothing", "no stage derived/nothing to drop (stages: derived/deskew, raw)"), ("../x", "not a stage")],
)
def test_drop_of_an_unknown_stage_is_one_line(copy, tmp_path, stage, message):
    before = snapshot(copy)
    assert_user_error(cli("drop", stage, "--store", copy, cwd=tmp_path), message)
    assert snapshot(copy) == before


def test_a_damaged_stage_can_be_dropped_and_made_again(copy, originals, client):
    (copy / "derived/deskew/zarr.json").write_text("garbage")
    store = Store(str(copy))
    assert store.drop_stage("derived/deskew") == ["derived/deskew"]
    run_transform(store, client, "deskew")
    got = client.compute(store.read("derived/deskew/train/images"), sync=True)
    assert np.array_equal(got, originals["derived/deskew/train/images"])


# -- random damage: exact data or one line, never anything else --------------------------------
def _files(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*") if p.is_file())


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
@given(
    damages=st.lists(
        st.tuples(
            st.integers(min_value=0),  # which file (modulo the number of files)
            st.sampled_from(DAMAGES),
            st.integers(min_value=0, max_value=2**20),  # which byte
            st.integers(min_value=1, max_value=255),  # which bits, or the garbage byte
        ),
        min_size=1,
        max_size=2,
    )
)
def test_random_damage_gives_the_original_arrays_or_one_line_errors(pristine, originals, client, idx_folder, damages):
    files = _files(pristine)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "mnist.zarr"
        shutil.copytree(pristine, copy)
        for which, how, position, value in damages:
            target = copy / files[which % len(files)]
            if target.exists():
                damage(target, how, position, value)
        store = Store(str(copy))

        read_failed = False
        for path, array in originals.items():
            try:
                got = client.compute(store.read(path), sync=True)
            except UserError as exc:
                assert "\n" not in str(exc)
                read_failed = True
                continue
            assert got.dtype == array.dtype and np.array_equal(got, array), path

        try:
            info = describe(store)
        except UserError as exc:
            assert "\n" not in str(exc)
        else:
            json.dumps(info)

        try:
            _, problems = verify_store(store, client)
        except UserError as exc:
            assert "\n" not in str(exc)
        else:
            assert problems or not read_failed, "verify found nothing while a read failed"

        try:  # re-ingesting the same inputs either rewrites raw exactly, skips it, or refuses in one line
            ingest(Source("idx", (str(idx_folder),)), store, client, chunk_size=CHUNK)
        except UserError as exc:
            assert "\n" not in str(exc)
        for path in ("raw/train/images", "raw/test/labels"):
            try:
                got = client.compute(store.read(path), sync=True)
            except UserError as exc:
                assert "\n" not in str(exc)
            else:
                assert np.array_equal(got, originals[path]), path
