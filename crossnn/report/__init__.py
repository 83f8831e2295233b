"""Reports: reports/<name>/ with README.md, PNG figures and the raw JSON they were drawn from.

The inputs are the JSON documents crossnn writes (`crossnn run --json`, `crossnn bench --json`) and
pytest-benchmark's `--benchmark-json`, so a report can be rebuilt from files. The folder is built
beside its final place and swapped in, so it appears complete or not at all; an existing folder is
replaced only when it is a report crossnn wrote, and then only the files its manifest lists go: any
other file there (the user's) is carried into the new folder. File names made from spec names keep only safe
characters, and the JSON is strict (non-finite floats spelt as strings, see crossnn.files.json_text).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from crossnn.differences.catalog import ENTRIES
from crossnn.errors import OutputError
from crossnn.files import json_text, replace_directory, revive_floats
from crossnn.report import figures
from crossnn.report.markdown import readme, run_stems

#: the cases the overhead figure shows (the benchmark issue's targets): the circle net and FCN-R at 256
HEADLINE_CASES = {("seeds", "circle"), ("fcn-r", "batch 256")}

#: the file in a report folder that lists the files the report wrote: replacing the report removes
#: those and keeps every other file there (the user's)
MANIFEST = "crossnn-manifest.txt"
MANIFEST_HEADING = "# files crossnn wrote in this folder; a new report replaces these and keeps any other file"

#: reports written before manifests: the first line of their README.md, and the names of the files
#: they may hold (a name with a wildcard part counts as the report's only when its README links it)
LEGACY_REPORT_FILES = {
    "# crossnn report: ": re.compile(r"README\.md|bench\.json|pytest_benchmark\.json|run_.+\.json"
                                     r"|(loss|parity|metrics)_.+\.png|step_time_vs_(size|batch)\.png"
                                     r"|crossover_(batch|size)\.png|overhead\.png"),
    # the differences report: a page and a figure per catalog entry
    "# What differs between the frameworks, measured": re.compile(
        r"README\.md|(" + "|".join(re.escape(e.id) for e in ENTRIES) + r")\.(md|png)"),
}


@dataclass
class ReportInputs:
    name: str
    command: str
    runs: list[dict] = field(default_factory=list)       # `crossnn run --json` documents
    bench: dict | None = None                            # a `crossnn bench --json` document
    pytest_benchmark: dict | None = None                 # pytest-benchmark's --benchmark-json document
    note: str = ""                                       # a paragraph for the top of the page
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M %Z"))


def _figures(inputs: ReportInputs) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for doc, stem in zip(inputs.runs, run_stems(inputs)):
        name = doc["experiment"]["name"]
        curves = {r["label"]: r["losses"] for r in doc["runs"]}
        out[f"loss_{stem}.png"] = figures.loss_curves(name, {k: _array(v) for k, v in curves.items()})
        divergence = {r["label"]: [tuple(p) for p in r["parity"]["curve"]] for r in doc["runs"]
                      if r.get("parity") and not r["reference"]}
        tolerances = {f"{r['dtype']} {'cpu' if r['device'] == 'cpu' else 'gpu'}": r["parity"]["rtol"]
                      for r in doc["runs"] if r.get("parity") and not r["reference"]}
        out[f"parity_{stem}.png"] = figures.parity_curves(name, divergence, tolerances)
        histories = {r["label"]: r.get("history") or {} for r in doc["runs"]}
        out[f"metrics_{stem}.png"] = figures.metric_curves(name, {k: v for k, v in histories.items() if v})
    if inputs.bench:
        rows = inputs.bench["rows"]
        width = [r for r in rows if r["suite"] == "mlp-width"]
        batch = [r for r in rows if r["suite"] == "fcn-r"]
        out["step_time_vs_size.png"] = figures.step_time(
            "MLP 2 -> width -> 1 (batch 100): step time against model size", width, "parameters", "parameters")
        out["step_time_vs_batch.png"] = figures.step_time(
            "FCN-R 784-2048-4096-1024-10: step time against batch size", batch, "batch_size", "batch size")
        out["crossover_batch.png"] = figures.crossover("FCN-R: where the GPU starts to win", batch, "batch_size",
                                                       "batch size")
        out["crossover_size.png"] = figures.crossover("MLP width sweep: where the GPU starts to win", width,
                                                      "parameters", "parameters")
        headline = [r for r in rows if (r["suite"], r["case"]) in HEADLINE_CASES]
        out["overhead.png"] = figures.overhead(headline or rows)
    return out


def _array(values):
    import numpy as np

    return np.asarray(values, dtype=float)


def check_report_folder(root: Path, name: str) -> Path:
    """The folder `root`/`name` a report goes to, once checked: `name` is one plain folder name and a
    folder already there is one crossnn may replace. Raises a one-line OutputError."""
    if name in ("", ".", "..") or "/" in name or (os.altsep and os.altsep in name) or "\0" in name:
        raise OutputError(f"--name: must be a plain folder name (not empty, '.' or '..', no '/'), got {name!r}")
    target = root / name
    check_replaceable(target)
    return target


def check_replaceable(folder: Path) -> list[str]:
    """The entries of `folder` that a new report must keep: none when it is missing or empty; the
    ones its manifest does not list when it is a report crossnn wrote (for a report from before
    manifests, the ones that are not its README.md and the files it links). Raises a one-line
    OutputError when `folder` is not a crossnn report at all."""
    if not os.path.lexists(folder):
        return []
    if not folder.is_dir():
        raise OutputError(f"{folder} exists and is not a folder; not replacing it: choose another --name or --out")
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return []
    own = _manifest(folder)
    if own is None:
        own = _legacy_report_files(folder, entries)
    if own is None:
        raise OutputError(f"{folder} exists and is not a crossnn report (no {MANIFEST} and no README.md of a "
                          "crossnn report); not replacing it: choose another --name or --out, or remove it")
    return [name for name in entries if name not in own]


def _manifest(folder: Path) -> set[str] | None:
    """The file names the manifest in `folder` lists (itself included), or None without one."""
    path = folder / MANIFEST
    if path.is_symlink() or not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0] != MANIFEST_HEADING:
        return None
    return {MANIFEST, *(line for line in lines[1:] if line and "/" not in line)}


def _legacy_report_files(folder: Path, entries: list[str]) -> set[str] | None:
    """The files a report written before manifests holds of its own, or None when `folder` is not
    one: README.md under a report heading, the fixed names, and the names with a wildcard part
    (run_<stem>.json through its loss_<stem>.png) that its README links."""
    readme_file = folder / "README.md"
    if readme_file.is_symlink() or not readme_file.is_file():
        return None
    text = readme_file.read_text(encoding="utf-8", errors="replace")
    heading = text.split("\n", 1)[0]
    names = next((names for start, names in LEGACY_REPORT_FILES.items() if heading.startswith(start)), None)
    if names is None:
        return None
    own = set()
    for name in entries:
        path = folder / name
        if path.is_symlink() or not path.is_file() or not names.fullmatch(name):
            continue
        linked = f"({name})" in text or (name.startswith("run_") and f"(loss_{name[4:-5]}.png)" in text)
        if linked or not _WILDCARD.fullmatch(name):
            own.add(name)
    return own


#: names of a report's files made from a spec name (the rest are fixed)
_WILDCARD = re.compile(r"run_.+\.json|(loss|parity|metrics)_.+\.png")


def with_manifest(build: Callable[[Path], None]) -> Callable[[Path], None]:
    """`build`, followed by writing the manifest of the files it made."""

    def build_and_list(folder: Path) -> None:
        build(folder)
        names = sorted(p.name for p in folder.iterdir())
        (folder / MANIFEST).write_text("\n".join([MANIFEST_HEADING, *names]) + "\n")

    return build_and_list


def write_report(inputs: ReportInputs, root: Path = Path("reports")) -> Path:
    """Write reports/<name>/ (replacing an older report only once the new one is complete)."""
    target = check_report_folder(root, inputs.name)
    inputs = replace(inputs, runs=revive_floats(inputs.runs), bench=revive_floats(inputs.bench),
                     pytest_benchmark=revive_floats(inputs.pytest_benchmark))
    pictures = {name: png for name, png in _figures(inputs).items() if png is not None}

    def build(folder: Path) -> None:
        for name, png in pictures.items():
            (folder / name).write_bytes(png)
        for doc, stem in zip(inputs.runs, run_stems(inputs)):
            (folder / f"run_{stem}.json").write_text(json_text(doc))
        if inputs.bench:
            (folder / "bench.json").write_text(json_text(inputs.bench))
        if inputs.pytest_benchmark:
            (folder / "pytest_benchmark.json").write_text(json_text(inputs.pytest_benchmark))
        (folder / "README.md").write_text(readme(inputs, sorted(pictures)))

    replace_directory(target, with_manifest(build), check_replaceable)
    return target
