"""The report's README.md: machine, versions, parity tables, benchmark tables, checks and figures."""

from __future__ import annotations

from collections import defaultdict

from crossnn.bench import steadiness
from crossnn.bench.machine import kind as machine_kind
from crossnn.bench.machine import same_machine
from crossnn.bench.report_table import without_tutorial
from crossnn.bench.runner import percent_text
from crossnn.files import safe_names

METHOD = """\
Each row is one trainer, built from the case's spec and initial parameters, timed on the case's batch
plan (full-size batches only, so no shape change triggers a recompile). The first step is timed on its
own: it includes graph tracing or compilation and is reported as "first step", never averaged in.
Warm-up steps follow (at least 0.1 s) and are excluded. Then 5 (or more) repeats each run enough steps
to last at least 0.2 s (0.05 s with --quick); the device is synchronised before every clock read.
Tables give the median time per step and the interquartile range (IQR) across repeats.
GFLOP/s counts the matrix multiplies of a training step from the spec (forward, weight gradient and,
where needed, input gradient: 2·B·in·out each). "% peak" divides it by the best n×n matmul
(n = 2048) measured in turn with the row: on the CPU NumPy's product takes a turn in every round of
repeats, and the framework's own product is measured in the same group just before them; "% own"
divides it by the framework's own product alone (PyTorch's counts its oneDNN inner product too). No
percentage is above 100: a row faster than its peak (which then was measured at a busier moment)
shows "≥100\\*" instead. "x tutorial" divides a lowering's step time by the hand-written tutorial loop
of the same framework, device, dtype and case, timed in the same run (below 1: crossnn's lowering is
faster); a framework's modes and its hand-written loop take their repeats in turn, so a disturbance
of the machine falls on all of them alike. GPU rows run only where a framework sees a GPU; otherwise
they are listed as skipped.

The machine's steadiness is measured while each group is timed: a fixed calibration kernel (a
512 × 512 float64 NumPy matmul, best of 3) before, between and after the rounds of repeats, the CPU
time other processes took on the benchmark's cores and the CPU steal time (/proc/stat), and the load
average. A row is marked **!** when its calibration ran more than {calibration:.0%} slower than the
best calibration on its host in the run, when other processes took more than {others:.0%} of its
cores' time, when steal exceeded {steal:.0%}, or when its IQR exceeded {iqr:.0%} of its median; a check
made from such rows is "{inconclusive}" instead of pass or fail."""


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
                        for doc in inputs.runs if (d := doc.get("machine")) and m and not same_machine(d, m)})
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


def busy(row: dict) -> list[str]:
    """A row's busy reasons: the ones the bench file recorded, or (files written before crossnn
    measured steadiness) the IQR rule alone."""
    return list(row["busy"]) if "busy" in row else steadiness.busy_reasons(row, None)


def above_peak(row: dict, own: bool = False) -> bool:
    """Whether the row beat its peak (files written before the flag: a share above 100%)."""
    flag, percent = ("above_own_peak", "percent_of_own_peak") if own else ("above_peak", "percent_of_peak")
    return bool(row.get(flag)) or (row.get(percent) or 0.0) > 100.0


#: a table cell for a row that beat its peak (the terminal's ABOVE_PEAK_SHORT, the asterisk escaped)
ABOVE_PEAK_CELL = "≥100\\*"


def _percent(row: dict, own: bool = False) -> str:
    if above_peak(row, own):
        return ABOVE_PEAK_CELL
    return percent_text(row.get("percent_of_own_peak" if own else "percent_of_peak"), False, short=True)


def speed_words(speedup: float) -> str:
    """How a time compares, never rounded into the wrong direction: speedup = other time / this time."""
    def times(x: float) -> str:
        return f"{x:.3f}×" if x < 10 else f"{x:.1f}×"

    if speedup > 1:
        return f"{times(speedup)} faster than"
    if speedup < 1:
        return f"{times(1 / speedup)} slower than"
    return "as fast as"


def _checks(bench, rows=None) -> list[str]:
    """The acceptance numbers of the benchmark issue, computed from the rows (default: all of the
    bench file's); a check made from a row timed on a busy machine is inconclusive."""
    rows = bench["rows"] if rows is None else rows
    facts = _backend_facts(bench)
    lines = ["### Checks", ""]

    def line(ok: bool, text: str, *involved: dict, why_not: str = "") -> None:
        reasons = sorted({reason.split(":")[0] for r in involved for reason in busy(r)})
        if reasons:
            lines.append(f"- {steadiness.INCONCLUSIVE}: {text} (marked by {', '.join(reasons)})")
        elif why_not:
            lines.append(f"- inconclusive ({why_not}): {text}")
        else:
            lines.append(f"- {'pass' if ok else 'FAIL'}: {text}")

    for case, suite in (("circle", "seeds"), ("batch 256", "fcn-r")):
        for backend, info in facts.items():
            target = REFERENCE_OVERHEAD_TARGET if info["reference"] else OVERHEAD_TARGET
            for r in _find(rows, suite=suite, case=case, backend=backend, mode=info["default_mode"], device="cpu"):
                if r["ratio_to_tutorial"] is not None:
                    tutorial = _find(rows, suite=suite, case=case, backend=backend, mode="tutorial", device="cpu",
                                     dtype=r["dtype"], machine=r.get("machine"), worker=r.get("worker"))
                    line(r["ratio_to_tutorial"] <= target,
                         f"{suite}/{case} {backend} {r['mode']} {r['dtype']}: {r['ratio_to_tutorial']:.3f} × the "
                         f"hand-written loop (target ≤ {target})", r, *tutorial)
    for backend, info in facts.items():
        for t in _find(rows, suite="seeds", case="circle", backend=backend, mode="tutorial", device="cpu"):
            lowered = [r for r in _find(rows, suite="seeds", case="circle", backend=backend, device="cpu",
                                        dtype=t["dtype"], machine=t.get("machine"), worker=t.get("worker"))
                       if r["mode"] != "tutorial"]
            if not lowered:
                continue
            best = min(lowered, key=lambda r: r["seconds_per_step"])
            speedup = t["seconds_per_step"] / best["seconds_per_step"]
            text = (f"circle {backend} {t['dtype']}: fastest mode '{best['mode']}' "
                    f"{_us(best['seconds_per_step'])} µs/step, {speed_words(speedup)} the hand-written tutorial "
                    f"loop ({_us(t['seconds_per_step'])} µs)")
            # files written before backends had several fast modes name one: "fast_mode"
            if (info.get("fast_modes") or info.get("fast_mode")) and not info["reference"]:
                line(speedup >= FAST_SPEEDUP_TARGET, text + f" (target ≥ {FAST_SPEEDUP_TARGET}× faster)", t, best)
            else:
                lines.append(f"- measured: {text}" + (" **!** (machine busy)" if busy(t) or busy(best) else ""))
    for backend in facts:
        fcn = [r for r in _find(rows, suite="fcn-r", case="batch 256", backend=backend, device="cpu", dtype="float32")
               if (r["percent_of_peak"] is not None or above_peak(r)) and r["mode"] != "tutorial"]
        if fcn:
            best = max(fcn, key=lambda r: r["gflops"] / r["peak_gflops"] if r.get("peak_gflops") else 0.0)
            own = "" if best.get("percent_of_own_peak") is None and not above_peak(best, own=True) else (
                f"; {percent_text(best.get('percent_of_own_peak'), above_peak(best, own=True))} of {backend}'s own "
                "matmul")
            line(not above_peak(best) and best["percent_of_peak"] >= PEAK_TARGET,
                 f"FCN-R batch 256 float32 {backend}: best mode '{best['mode']}' "
                 f"at {percent_text(best['percent_of_peak'], above_peak(best))} of the machine's matmul "
                 f"peak (target ≥ {PEAK_TARGET:g}%){own}", best,
                 why_not="the row beat the peak it is compared with: that peak was measured low"
                 if above_peak(best) else "")
    coretype = (bench.get("machine") or {}).get("env", {}).get("OPENBLAS_CORETYPE")
    if coretype:
        lines.append(f"- note: the environment set OPENBLAS_CORETYPE={coretype}, so OpenBLAS (NumPy's BLAS) ran "
                     f"{coretype} kernels whatever this CPU supports; the NumPy rows and NumPy's peak "
                     "carry that")
    if not any(r["device"] != "cpu" for r in rows):
        lines.append("- no GPU was measured here: GPU rows were skipped, not faked")
    return lines + [""]


def _crossover_table(rows) -> list[str]:
    """Per CPU/GPU pair, backend, mode and dtype: where along each sweep the GPU starts to win."""
    from crossnn.report.figures import crossover_lines

    out = []
    for suite, x_key, x_name in (("fcn-r", "batch_size", "batch"), ("mlp-width", "parameters", "parameters")):
        for label, points in crossover_lines([r for r in rows if r["suite"] == suite], x_key).items():
            pair, target = label.split(": ", 1)
            wins = [x for x, ratio in points if ratio > 1]
            if not wins:
                where = f"CPU faster at every {x_name} measured ({points[0][0]:,} … {points[-1][0]:,})"
            elif wins[0] == points[0][0] and len(wins) == len(points):
                where = f"GPU faster at every {x_name} measured ({points[0][0]:,} … {points[-1][0]:,})"
            else:
                where = f"GPU faster from {x_name} {wins[0]:,}"
            out.append((suite, pair, target, where, " ".join(f"{ratio:.2f}" for _, ratio in points)))
    if not out:
        return []
    return (["### CPU/GPU crossover", "", "CPU time / GPU time along each sweep, per pair of a CPU and a GPU "
             "(above 1 the GPU is faster).", ""]
            + _table(("suite", "GPU vs CPU", "backend mode dtype", "crossover", "CPU/GPU ratio per point"), out)
            + [""])


def _suite_tables(rows, level: str) -> list[str]:
    lines = []
    by_suite = defaultdict(list)
    for r in rows:
        by_suite[r["suite"]].append(r)
    several_workers = len({r.get("worker", "local") for r in rows}) > 1
    for suite, members in by_suite.items():
        lines += [f"{level} {suite}", ""]
        lines += _table(("case", "backend", "mode", "device", "dtype", "params", "batch", "µs/step", "IQR µs",
                         "samples/s", "GFLOP/s", "% peak", "% own", "x tutorial", "first step s")
                        + (("worker",) if several_workers else ()),
                        [(r["case"], r["backend"], r["mode"], r["device"], r["dtype"], f"{r['parameters']:,}",
                          r["batch_size"], _us(r["seconds_per_step"]) + (" **!**" if busy(r) else ""),
                          _us(r["iqr_seconds"]), f"{r['samples_per_second']:,.0f}", f"{r['gflops']:.2f}",
                          _percent(r), _percent(r, own=True),
                          "-" if r["ratio_to_tutorial"] is None else f"{r['ratio_to_tutorial']:.3f}",
                          f"{r['first_step_seconds']:.3f}")
                         + ((f"{r.get('worker', 'local')}" + (f" (attempt {r['attempt']})"
                                                              if r.get("attempt", 1) > 1 else ""),)
                            if several_workers else ()) for r in members])
        untutored = [f"{case} ({backend})" for _, case, backend in without_tutorial(members)]
        if untutored:
            lines += ["", "No hand-written loop to compare with (that framework's does not cover the model), "
                          "so no \"x tutorial\": " + ", ".join(untutored) + "."]
        lines.append("")
    marked = [r for r in rows if busy(r)]
    if marked:
        lines += [f"**!** {len(marked)} row(s) timed while the machine was busy, marked by "
                  + steadiness.summary({"busy": busy(r)} for r in marked) + ": rerun them on a quiet machine "
                  "before trusting them.", ""]
    if any(above_peak(r) or above_peak(r, own=True) for r in rows):
        lines += [f"{ABOVE_PEAK_CELL}: the row ran faster than the matmul peak it is compared with, so that peak was "
                  "measured low (at a busier moment, or, in files from before peaks were measured in turn with "
                  "the rows, in another process) and gives no percentage.", ""]
    return lines


def _bench(inputs, pictures) -> list[str]:
    bench = inputs.bench
    if not bench:
        return []
    method = METHOD.format(calibration=steadiness.CALIBRATION_BOUND, others=steadiness.OTHERS_BOUND,
                           steal=steadiness.STEAL_BOUND, iqr=steadiness.NOISY_IQR, inconclusive=steadiness.INCONCLUSIVE)
    lines = ["## Benchmarks", "", method, ""]
    executor = (bench.get("settings") or {}).get("executor") or {}
    if executor.get("kind") == "dask":
        lines += [f"Run on a Dask cluster (scheduler {executor.get('scheduler') or '-'}, workers "
                  f"{', '.join(executor.get('workers') or []) or '-'}): each backend × case × device a job in a fresh "
                  "process on one worker; every row names its worker.", ""]
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
    kinds: dict[str, list[dict]] = defaultdict(list)
    for r in bench["rows"]:
        kinds[r.get("machine") or machine_kind(bench["machine"])].append(r)
    if len(kinds) > 1:
        lines += [f"Rows from {len(kinds)} kinds of machine, one section each (a machine's rows are compared with "
                  "its own hand-written loops and peaks only).", ""]
    for kind, rows in kinds.items():
        level = "###" if len(kinds) == 1 else "####"
        if len(kinds) > 1:
            workers = sorted({r.get("worker", "local") for r in rows})
            lines += [f"### Machine: {kind}", "", f"Workers: {', '.join(workers)}.", ""]
        lines += [level + line[3:] if line.startswith("### ") else line for line in _checks(bench, rows)]
        lines += _suite_tables(rows, level)
    lines += _crossover_table(bench["rows"])
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
        where = (f" (worker {f['worker']}, attempt {f.get('attempt', 1)})" if f.get("worker", "local") != "local"
                 else "")
        lines.append(f"- not timed {f['suite']}/{f['case']} {f['backend']} {f['device']} {f['mode']} {f['dtype']}"
                     f"{where}: {f['reason']}")
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
