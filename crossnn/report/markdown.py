"""The report's README.md: machine, versions, parity tables, benchmark tables, checks and figures."""

from __future__ import annotations

from collections import defaultdict

from crossnn.bench.report_table import without_tutorial
from crossnn.files import safe_names

METHOD = """\
Each row is one trainer, built from the case's spec and initial parameters, timed on the case's batch
plan (full-size batches only, so no shape change triggers a recompile). The first step is timed on its
own: it includes graph tracing or compilation and is reported as "first step", never averaged in.
Warm-up steps follow (at least 0.1 s) and are excluded. Then 5 (or more) repeats each run enough steps
to last at least 0.2 s (0.05 s with --quick); the device is synchronised before every clock read.
Tables give the median time per step and the interquartile range (IQR) across repeats.
GFLOP/s counts the matrix multiplies of a training step from the spec (forward, weight gradient and,
where needed, input gradient: 2·B·in·out each), and "% peak" divides it by the best n×n matmul
(n = 2048) any framework reached on the same device and dtype in the same run; "% own" divides it by
that framework's own matmul (its BLAS may be slower than the best one; PyTorch's counts its oneDNN
inner product too). "x tutorial" divides a lowering's step time by the hand-written tutorial loop of
the same framework, device, dtype and case, timed in the same run (below 1: crossnn's lowering is
faster); a framework's modes and its hand-written loop take their repeats in turn, so a disturbance
of the machine falls on all of them alike. GPU rows run only where a framework sees a GPU; otherwise
they are listed as skipped."""


def _table(headers, rows) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def _machine(inputs) -> list[str]:
    bench = inputs.bench
    # the benchmark's machine, else the one the parity runs were made on (`crossnn run --json` records it)
    m = bench["machine"] if bench else next((doc["machine"] for doc in inputs.runs if doc.get("machine")), None)
    elsewhere = sorted({f"{doc['experiment']['name']}: {d['cpu']}, {d['logical_cores']} logical cores"
                        + (f", GPU {', '.join(d['gpus'])}" if d.get("gpus") else "")
                        for doc in inputs.runs if (d := doc.get("machine")) and m and d != m})
    lines = ["## Machine", ""]
    if m:
        lines += [f"- CPU: {m['cpu']}, {m['logical_cores']} logical cores, {m['memory_gib']:.1f} GiB memory",
                  f"- GPU: {', '.join(m['gpus']) if m['gpus'] else 'none (GPU rows skipped, not faked)'}",
                  f"- {m['platform']}, Python {m['python']}, NumPy {m['numpy']}"
                  + (f" (BLAS threads: {', '.join(f'{k}: {v}' for k, v in m['numpy_blas_threads'].items())})"
                     if m["numpy_blas_threads"] else ""),
                  ]
        if m.get("env"):
            lines.append("- environment: " + ", ".join(f"{k}={v}" for k, v in m["env"].items()))
        for name, runtime in (bench or {}).get("runtimes", {}).items():
            if runtime:
                lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in runtime.items()))
    if elsewhere:
        lines.append("- parity runs made on another machine: " + "; ".join(elsewhere))
    versions = {}
    for doc in inputs.runs:
        for r in doc["runs"]:
            versions[r["backend"]] = r["version"]
    if versions:
        lines.append("- framework versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    return lines + [""]


def _metric(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run_stems(inputs) -> list[str]:
    """The file-name part of each parity run's files (run_<stem>.json, loss_<stem>.png, ...): its spec's
    name made safe, and distinct when two runs share a spec (e.g. one made here, one elsewhere)."""
    return safe_names([doc["experiment"]["name"] for doc in inputs.runs])


def _parity(inputs, pictures) -> list[str]:
    lines = []
    for doc, stem in zip(inputs.runs, run_stems(inputs)):
        name = doc["experiment"]["name"]
        lines += [f"## Parity: {name}", "",
                  f"{doc['steps']} steps, parameters compared with {doc['reference']} every "
                  f"{doc['snapshot_every']} steps. A snapshot passes when max|a − r| ≤ atol + rtol · max|r|.", ""]
        rows = []
        for r in doc["runs"]:
            if r["reference"]:
                rows.append((r["label"], r["version"], r["steps"], f"{r['seconds']:.2f}",
                             _metric(r["metrics"].get("accuracy", "-")), "reference", "", "", ""))
                continue
            p = r["parity"]
            rows.append((r["label"], r["version"], r["steps"], f"{r['seconds']:.2f}",
                         _metric(r["metrics"].get("accuracy", "-")), f"{p['max_abs']:.2e}", f"{p['max_rel']:.2e}",
                         "-" if p["first_fail_step"] is None else p["first_fail_step"],
                         ("pass" if p["passed"] else "FAIL") + (f" ({p['note']})" if p["note"] else "")))
        lines += _table(("run", "version", "steps", "train s", "accuracy", "max abs", "max rel", "first step out",
                         "verdict"), rows)
        for picture, caption in ((f"loss_{stem}.png", "Loss per step of every run"),
                                 (f"parity_{stem}.png", "Largest relative parameter difference against step"),
                                 (f"metrics_{stem}.png", "Metrics per epoch")):
            if picture in pictures:
                lines += ["", f"![{caption}]({picture})", ""]
    return lines


def _find(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


#: the benchmark issue's targets: a lowering's default mode against its framework's hand-written loop
#: (the NumPy reference's looser), a fast mode against the hand-written loop, FCN-R share of the peak
OVERHEAD_TARGET, REFERENCE_OVERHEAD_TARGET, FAST_SPEEDUP_TARGET, PEAK_TARGET = 1.10, 1.2, 2.0, 70.0


def _backend_facts(bench) -> dict[str, dict]:
    """Each backend's default mode, fast modes and reference flag, as the file records them (files
    written before it did: from the installed backend of that name)."""
    from crossnn import backends

    known = bench.get("backends") or {}
    out = {}
    for row in bench["rows"]:
        name = row["backend"]
        if name not in out:
            entry = backends.discover().get(name)
            installed = entry.backend if entry is not None else None
            out[name] = known.get(name) or {
                "default_mode": installed.modes[0] if installed else None,
                "fast_modes": list(installed.fast_modes) if installed else [],
                "reference": bool(installed and installed.reference)}
    return out


def _checks(bench) -> list[str]:
    """The acceptance numbers of the benchmark issue, computed from the rows."""
    rows = bench["rows"]
    facts = _backend_facts(bench)
    lines = ["### Checks", ""]

    def line(ok: bool, text: str) -> None:
        lines.append(f"- {'pass' if ok else 'FAIL'}: {text}")

    for case, suite in (("circle", "seeds"), ("batch 256", "fcn-r")):
        for backend, info in facts.items():
            target = REFERENCE_OVERHEAD_TARGET if info["reference"] else OVERHEAD_TARGET
            for r in _find(rows, suite=suite, case=case, backend=backend, mode=info["default_mode"], device="cpu"):
                if r["ratio_to_tutorial"] is not None:
                    line(r["ratio_to_tutorial"] <= target,
                         f"{suite}/{case} {backend} {r['mode']} {r['dtype']}: {r['ratio_to_tutorial']:.3f} × the "
                         f"hand-written loop (target ≤ {target})")
    for backend, info in facts.items():
        for t in _find(rows, suite="seeds", case="circle", backend=backend, mode="tutorial", device="cpu"):
            lowered = [r for r in _find(rows, suite="seeds", case="circle", backend=backend, device="cpu",
                                        dtype=t["dtype"])
                       if r["mode"] != "tutorial"]
            if not lowered:
                continue
            best = min(lowered, key=lambda r: r["seconds_per_step"])
            speedup = t["seconds_per_step"] / best["seconds_per_step"]
            text = (f"circle {backend} {t['dtype']}: fastest mode '{best['mode']}' "
                    f"{_us(best['seconds_per_step'])} µs/step, "
                    f"{speedup:.2f}× faster than the hand-written tutorial loop ({_us(t['seconds_per_step'])} µs)")
            # files written before backends had several fast modes name one: "fast_mode"
            if (info.get("fast_modes") or info.get("fast_mode")) and not info["reference"]:
                line(speedup >= FAST_SPEEDUP_TARGET, text + f" (target ≥ {FAST_SPEEDUP_TARGET}×)")
            else:
                lines.append(f"- measured: {text}")
    for backend in facts:
        fcn = [r for r in _find(rows, suite="fcn-r", case="batch 256", backend=backend, device="cpu", dtype="float32")
               if r["percent_of_peak"] is not None and r["mode"] != "tutorial"]  # crossnn's modes, not the loop
        if fcn:
            best = max(fcn, key=lambda r: r["percent_of_peak"])
            own = best.get("percent_of_own_peak")
            own_text = f"; {own:.1f}% of {backend}'s own matmul" if own is not None else ""
            line(best["percent_of_peak"] >= PEAK_TARGET,
                 f"FCN-R batch 256 float32 {backend}: best mode '{best['mode']}' "
                 f"at {best['percent_of_peak']:.1f}% of the machine's matmul "
                 f"peak (target ≥ {PEAK_TARGET:g}%){own_text}")
    coretype = (bench.get("machine") or {}).get("env", {}).get("OPENBLAS_CORETYPE")
    if coretype:
        lines.append(f"- note: the environment set OPENBLAS_CORETYPE={coretype}, so OpenBLAS (NumPy's BLAS) ran "
                     f"{coretype} kernels whatever this CPU supports; the NumPy rows and NumPy's peak "
                     "carry that")
    if not any(r["device"] != "cpu" for r in rows):
        lines.append("- no GPU was measured here: GPU rows were skipped, not faked")
    return lines + [""]


def _bench(inputs, pictures) -> list[str]:
    bench = inputs.bench
    if not bench:
        return []
    lines = ["## Benchmarks", "", METHOD, ""]
    notes = bench.get("mode_notes", {})
    if notes:
        lines += ["### Modes", ""]
        lines += _table(("backend", "mode", "what it does"),
                        [(b, m, text) for b, per in notes.items() for m, text in per.items()]
                        + [(b, "tutorial", "the framework's own tutorial-style loop, hand-written, no crossnn code")
                           for b in notes])
        lines.append("")
    lines += ["### Matrix-multiply peak (GFLOP/s, n = 2048)", ""]
    lines += _table(("device dtype", "best", "by framework"),
                    [(k, f"{bench['peaks'][k]:.1f}", ", ".join(f"{fw} {g:.1f}" for fw, g in per.items()))
                     for k, per in bench["peak_sources"].items()])
    lines.append("")
    lines += _checks(bench)
    by_suite = defaultdict(list)
    for r in bench["rows"]:
        by_suite[r["suite"]].append(r)
    for suite, rows in by_suite.items():
        lines += [f"### {suite}", ""]
        lines += _table(("case", "backend", "mode", "device", "dtype", "params", "batch", "µs/step", "IQR µs",
                         "samples/s", "GFLOP/s", "% peak", "% own", "x tutorial", "first step s"),
                        [(r["case"], r["backend"], r["mode"], r["device"], r["dtype"], f"{r['parameters']:,}",
                          r["batch_size"], _us(r["seconds_per_step"]), _us(r["iqr_seconds"]),
                          f"{r['samples_per_second']:,.0f}", f"{r['gflops']:.2f}",
                          "-" if r["percent_of_peak"] is None else f"{r['percent_of_peak']:.1f}",
                          "-" if r.get("percent_of_own_peak") is None else f"{r['percent_of_own_peak']:.1f}",
                          "-" if r["ratio_to_tutorial"] is None else f"{r['ratio_to_tutorial']:.3f}",
                          f"{r['first_step_seconds']:.3f}") for r in rows])
        untutored = [f"{case} ({backend})" for _, case, backend in without_tutorial(rows)]
        if untutored:
            lines += ["", "No hand-written loop to compare with (the tutorial loops cover chains of dense layers), "
                          "so no \"x tutorial\": " + ", ".join(untutored) + "."]
        lines.append("")
    for picture, caption in (("step_time_vs_size.png", "Step time against model size"),
                             ("step_time_vs_batch.png", "Step time against batch size"),
                             ("crossover_batch.png", "CPU/GPU crossover over batch size"),
                             ("crossover_size.png", "CPU/GPU crossover over model size"),
                             ("overhead.png",
                              "Step time relative to the hand-written loops (circle, FCN-R batch 256)")):
        if picture in pictures:
            lines += [f"![{caption}]({picture})", ""]
    if not any(r["device"] != "cpu" for r in bench["rows"]):
        lines += ["No GPU was measured in this run, so there is no CPU/GPU crossover figure.", ""]
    for s in bench["skipped"]:
        lines.append(f"- skipped {s['backend']} {s['device']} {s['mode']}: {s['reason']}")
    for f in bench["failures"]:
        lines.append(f"- not timed {f['suite']}/{f['case']} {f['backend']} {f['device']} {f['mode']} {f['dtype']}: "
                     f"{f['reason']}")
    return lines + [""]


def _pytest_benchmark(inputs) -> list[str]:
    doc = inputs.pytest_benchmark
    if not doc:
        return []
    rows = []
    for b in doc.get("benchmarks", []):
        info, stats = b.get("extra_info", {}), b["stats"]
        steps = info.get("steps", 1)
        rows.append((b["name"], info.get("backend", "-"), info.get("mode", "-"), info.get("dtype", "-"), steps,
                     _us(stats["median"] / steps), _us(stats["iqr"] / steps), stats["rounds"]))
    lines = ["## pytest-benchmark suite", "",
             f"From `{doc.get('machine_info', {}).get('node', 'this machine')}`, "
             f"{doc.get('datetime', '')}: median and IQR per training step over the rounds.", ""]
    return lines + _table(("benchmark", "backend", "mode", "dtype", "steps per call", "µs/step", "IQR µs", "rounds"),
                          rows) + [""]


def readme(inputs, pictures: list[str]) -> str:
    lines = [f"# crossnn report: {inputs.name}", "",
             f"Generated {inputs.created} with `{inputs.command}`. The raw data is in the JSON files beside "
             "this page.", ""]
    if inputs.note:
        lines += [inputs.note, ""]
    lines += _machine(inputs)
    lines += _parity(inputs, pictures)
    lines += _bench(inputs, pictures)
    lines += _pytest_benchmark(inputs)
    return "\n".join(lines).rstrip() + "\n"
