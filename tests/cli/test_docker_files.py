"""The Docker deployment files: no engine runs here, so check what can be checked without one.

The compose file parses, every service runs a command the installed package provides,
the job service's arguments are accepted by the real CLI (click) parser, and everything the
Dockerfile copies exists.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import yaml

from mnist_dask.cli import cli

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())


def test_compose_has_scheduler_two_workers_and_a_job_on_a_shared_store():
    services = COMPOSE["services"]
    assert set(services) == {"scheduler", "worker", "job"}
    assert services["worker"]["deploy"]["replicas"] == 2
    assert "store:/data" in services["worker"]["volumes"] and "store:/data" in services["job"]["volumes"]
    assert services["scheduler"]["ports"] == ["127.0.0.1:8786:8786", "127.0.0.1:8787:8787"]


def test_every_service_command_exists_in_the_installed_environment():
    for name, service in COMPOSE["services"].items():
        program = service["command"][0]
        assert shutil.which(program, path=str(Path(sys.executable).parent)), f"{name}: {program} not installed"


def test_job_service_arguments_are_accepted_by_the_cli(monkeypatch):
    monkeypatch.chdir(REPO)  # the job file is named relative to the image's working folder, the repository
    command = COMPOSE["services"]["job"]["command"]
    assert command[:2] == ["mnist-dask", "run"]
    run = cli.get_command(cli.make_context("mnist-dask", ["run", "--help"], resilient_parsing=True), "run")
    assert run is not None
    params = run.make_context("run", list(command[2:])).params
    assert (REPO / params["job"]).is_file()
    assert params["scheduler"] == "tcp://scheduler:8786"


def test_dockerfile_copies_files_that_exist_and_pins_versions():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", dockerfile, flags=re.M):
        for source in sources.split():
            assert (REPO / source).exists(), source
    pins = (REPO / "docker" / "constraints.txt").read_text()
    for package in ("dask", "distributed", "dask-ml", "zarr", "scikit-learn"):
        assert re.search(rf"^{package}==\d", pins, flags=re.M), package
