"""The study's ``index.html``: every published figure beside ours with its status, per-job times, links to reports.

Self-contained (no scripts, no external links); rendered from the study record alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jinja2

from mnist_dask.jobs.ledger import reproduced

PAGE = "index.html"
SUMMARY = "figures.md"
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("mnist_dask.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def write_study_page(study: dict[str, Any], folder: Path) -> Path:
    """Write ``folder/index.html`` for a study record (see mnist_dask.jobs.study) atomically."""
    jobs = [
        {**job, "link": _relative(job.get("report"), folder), "wall_time": _wall_time(job)} for job in study["jobs"]
    ]
    met = reproduced(study["ledger"])
    html = _ENVIRONMENT.get_template("study.html.j2").render(
        study=study,
        jobs=jobs,
        figures=study["figures"],
        met=met,
        total=len(study["figures"]),
        show=_show,
        counted=_counted,
    )
    target = folder / PAGE
    partial = target.with_name(PAGE + ".part")
    partial.write_text(html, encoding="utf-8")
    partial.replace(target)
    return target


def write_study_summary(study: dict[str, Any], folder: Path) -> Path:
    """Write ``folder/figures.md``: the ledger per job and every figure that is not as published, in Markdown.

    The README's table of figures is this file's content, pasted from a study run.
    """
    met = reproduced(study["ledger"])
    lines = [
        f"{met} of {len(study['figures'])} published figures reproduced "
        f"({study['ledger'].get('exact', 0)} exact, {study['ledger'].get('within print precision', 0)} within print "
        f"precision, {study['ledger'].get('differs', 0)} differ, {study['ledger'].get('missing', 0)} missing); "
        f"{_counted(len(study['jobs']), 'job')}, {study['jobs_seconds']:.0f} s of job runs{_workers(study)} "
        f"({study['seconds']:.0f} s in this study; a skipped job counts with its finished run's own time)."
        + (f" Failed: {', '.join(study['failed'])}." if study.get("failed") else ""),
        "",
        "| job | figures | exact | within print precision | differ | missing | wall time (s) | floor (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for job in study["jobs"]:
        ledger = job["ledger"]
        floor = job.get("floor_seconds")
        lines.append(
            f"| {job['job']} | {sum(ledger.values())} | {ledger.get('exact', 0)} | "
            f"{ledger.get('within print precision', 0)} | {ledger.get('differs', 0)} | {ledger.get('missing', 0)} | "
            f"{_wall_time(job, digits=0)} | "
            f"{'' if floor is None else f'{floor:.0f}'} |"
        )
    odd = [f for f in study["figures"] if f["status"] not in ("exact", "within print precision")]
    if odd:
        lines += ["", "| job | figure | published | ours | status |", "| --- | --- | --- | --- | --- |"]
        lines += [
            f"| {f['job']} | {f['key']} | {_show(f['published'])} | {_show(f['measured'])} | "
            f"{f['status']}{(': ' + f['reason']) if f.get('reason') else ''} |"
            for f in odd
        ]
    target = folder / SUMMARY
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


def _workers(study: dict[str, Any]) -> str:
    """ " on N workers" from the first job whose workers are known (a skipped job's from the run that finished it)."""
    workers = next((job["workers"] for job in study["jobs"] if job.get("workers")), None)
    return f" on {_counted(workers, 'worker')}" if workers else ""


def _counted(number: int, noun: str) -> str:
    """``1 job``, ``3 jobs``."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _wall_time(job: dict[str, Any], digits: int = 1) -> str:
    """A job's wall time in seconds; for a skipped job, the time its finished run took (from its result.json)."""
    if job["state"] == "skipped":
        return f"{job.get('run_seconds', 0.0):.{digits}f} (earlier run)"
    if job["state"] == "failed":
        return f"failed after {job['seconds']:.{digits}f}"
    return f"{job['seconds']:.{digits}f}"


def _relative(path: str | None, folder: Path) -> str | None:
    """A report's path relative to the study folder, so the folder can be moved with its runs."""
    if not path:
        return None
    return os.path.relpath(Path(path).resolve(), folder.resolve())


def _show(value: Any) -> str:
    """A figure in one short line: floats as printed by Python, long lists and text elided."""
    if isinstance(value, str):
        text = " ".join(value.split())
        return text if len(text) <= 80 else text[:77] + "..."
    if isinstance(value, list):
        inner = ", ".join(_show(v) for v in value[:8])
        return f"[{inner}{', ...' if len(value) > 8 else ''}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)
