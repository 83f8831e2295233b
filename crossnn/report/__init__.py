"""Reports: reports/<name>/ with README.md, PNG figures and the raw JSON they were drawn from.

The inputs are the JSON documents crossnn writes (`crossnn run --json`, `crossnn bench --json`) and
pytest-benchmark's `--benchmark-json`, so a report can be rebuilt from files. The folder is built
beside its final place and swapped in, so it appears complete or not at all.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from crossnn.files import replace_directory
from crossnn.report import figures
from crossnn.report.markdown import readme


#: the cases the overhead figure shows (the benchmark issue's targets): the circle net and FCN-R at 256
HEADLINE_CASES = {("seeds", "circle"), ("fcn-r", "batch 256")}


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
    for doc in inputs.runs:
        name = doc["experiment"]["name"]
        curves = {r["label"]: r["losses"] for r in doc["runs"]}
        out[f"loss_{name}.png"] = figures.loss_curves(name, {k: _array(v) for k, v in curves.items()})
        divergence = {r["label"]: [tuple(p) for p in r["parity"]["curve"]] for r in doc["runs"]
                      if r.get("parity") and not r["reference"]}
        tolerances = {f"{r['dtype']} {'cpu' if r['device'] == 'cpu' else 'gpu'}": r["parity"]["rtol"]
                      for r in doc["runs"] if r.get("parity") and not r["reference"]}
        out[f"parity_{name}.png"] = figures.parity_curves(name, divergence, tolerances)
        histories = {r["label"]: r.get("history") or {} for r in doc["runs"]}
        out[f"metrics_{name}.png"] = figures.metric_curves(name, {k: v for k, v in histories.items() if v})
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


def write_report(inputs: ReportInputs, root: Path = Path("reports")) -> Path:
    """Write reports/<name>/ (replacing an older one only once the new one is complete)."""
    target = root / inputs.name
    pictures = {name: png for name, png in _figures(inputs).items() if png is not None}

    def build(folder: Path) -> None:
        for name, png in pictures.items():
            (folder / name).write_bytes(png)
        for doc in inputs.runs:
            (folder / f"run_{doc['experiment']['name']}.json").write_text(json.dumps(doc, indent=1))
        if inputs.bench:
            (folder / "bench.json").write_text(json.dumps(inputs.bench, indent=1))
        if inputs.pytest_benchmark:
            (folder / "pytest_benchmark.json").write_text(json.dumps(inputs.pytest_benchmark, indent=1))
        (folder / "README.md").write_text(readme(inputs, sorted(pictures)))

    replace_directory(target, build)
    return target
