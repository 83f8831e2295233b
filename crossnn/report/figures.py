"""The report's figures, drawn with matplotlib (imported here only, on the Agg backend).

Each function takes plain data and returns PNG bytes, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

#: exact zeros on a log axis are drawn at this floor (and the caption says so)
ZERO_FLOOR = 1e-18
#: the highest loss drawn: a log axis reaching float64's range (a diverging run) cannot place its ticks
LOSS_CEILING = 1e100
#: where a relative difference with no scale (the reference tensor is all zero) is drawn
NO_SCALE_CEILING = 1e3


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _title(text: str, width: int = 70) -> str:
    """A title wrapped to fit the figure."""
    import textwrap

    return "\n".join(textwrap.fill(part, width) for part in text.split("\n"))


def _png(fig) -> bytes:
    for ax in fig.axes:
        ax.title.set_text(_title(ax.title.get_text()))  # wrapped in place: the title keeps its padding
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    _pyplot().close(fig)
    return buffer.getvalue()


_STYLES = ["-", "--", "-.", ":"]


#: runs longer than this are drawn as means over windows of steps (batch losses oscillate)
SMOOTH_ABOVE = 1000


def loss_curves(title: str, curves: dict[str, np.ndarray]) -> bytes | None:
    """Loss per step of every run, overlaid (log scale); identical curves share a line, so each run
    gets its own dash pattern and width. Long runs are averaged over windows of steps; steps whose
    loss is not finite are not drawn, losses above LOSS_CEILING are drawn at it."""
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    longest = max(len(losses) for losses in curves.values())
    window = max(1, longest // 400) if longest > SMOOTH_ABOVE else 1
    capped = False
    for i, (label, losses) in enumerate(curves.items()):
        losses = np.asarray(losses, dtype=float)
        losses = np.where(np.isfinite(losses), losses, np.nan)  # a diverged run's inf/NaN steps are left blank
        usable = len(losses) // window * window
        means = losses[:usable].reshape(-1, window).mean(axis=1) if usable else losses
        steps = np.arange(len(means)) * window + (window - 1) / 2
        capped |= bool(np.any(means > LOSS_CEILING))
        ax.plot(steps, np.clip(means, ZERO_FLOOR, LOSS_CEILING), _STYLES[i % len(_STYLES)], lw=2.2 - 0.3 * (i % 4),
                label=label, alpha=0.85)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("batch loss (before the step's update)" + (f", mean of {window} steps" if window > 1 else ""))
    ax.set_title(f"{title}: loss per step, all runs overlaid"
                 + (f"\n(a diverging run's losses above {LOSS_CEILING:g} drawn at it)" if capped else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def parity_curves(title: str, curves: dict[str, list[tuple[int, float]]], tolerances: dict[str, float]) -> bytes | None:
    """Largest relative parameter difference from the reference against step, one line per run,
    with each dtype's rtol as a dashed line."""
    if not curves:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5))
    unscaled = False  # an infinite ratio: the reference is all zero there (e.g. zero-initialised biases)
    for i, (label, points) in enumerate(curves.items()):
        steps = [s for s, _ in points]
        values = [NO_SCALE_CEILING if v == np.inf else max(v, ZERO_FLOOR) for _, v in points]
        unscaled |= any(v == np.inf for _, v in points)
        ax.plot(steps, values, _STYLES[i % len(_STYLES)], marker="." if len(points) < 60 else None, label=label)
    for name, rtol in tolerances.items():
        ax.axhline(rtol, color="grey", ls="--", lw=1)
        ax.annotate(f"{name} rtol {rtol:g}", (0, rtol), textcoords="offset points", xytext=(4, 3), fontsize=8,
                    color="grey")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step")
    ax.set_ylabel("max |a - r| / max |r| over parameters")
    ceiling = f"; a difference from an all-zero reference at {NO_SCALE_CEILING:g}" if unscaled else ""
    ax.set_title(f"{title}: divergence from the NumPy float64 reference\n"
                 f"(exact agreement drawn at {ZERO_FLOOR:g}{ceiling})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _series(rows: list[dict], x_key: str, by_machine: bool = False) -> dict[str, list[tuple[float, ...]]]:
    """(x, median, lower, upper) per line: the lower and upper ends of the bar are the first and third
    quartile of the repeats, or median ± IQR/2 for rows that did not record their quartiles."""
    series: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for r in rows:
        median, iqr = r["seconds_per_step"], r.get("iqr_seconds") or 0.0
        low, high = r.get("q1_seconds"), r.get("q3_seconds")
        if low is None or high is None:
            low, high = median - iqr / 2, median + iqr / 2
        where = f" [{r.get('machine') or r.get('device_name', '')}]" if by_machine else ""
        series[f"{r['backend']} {r['device']} {r['mode']} {r['dtype']}{where}"].append((r[x_key], median, low, high))
    return {k: sorted(v) for k, v in sorted(series.items())}


def step_time(title: str, rows: list[dict], x_key: str, x_label: str) -> bytes | None:
    fig = step_time_figure(title, rows, x_key, x_label)
    return None if fig is None else _png(fig)


def step_time_figure(title: str, rows: list[dict], x_key: str, x_label: str):
    """Seconds per training step against `x_key` (parameter count or batch size), log-log, one line per
    backend × device × mode × dtype (and machine, when rows come from several), hand-written tutorial
    loops dashed; a bar at every point spans the interquartile range of the repeats."""
    series = _series(rows, x_key, by_machine=len({r.get("machine") for r in rows}) > 1)
    if not series or all(len(points) < 2 for points in series.values()):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 5))
    colors = plt.get_cmap("tab20").colors
    backends = list(dict.fromkeys(label.split()[0] for label in series))
    markers = {name: "so^Dv<>p"[i % 8] for i, name in enumerate(backends)}  # one marker per backend
    for i, (label, points) in enumerate(series.items()):
        xs, medians, lows, highs = (np.array(v, dtype=float) for v in zip(*points))
        ax.errorbar(xs, medians * 1e3, yerr=[(medians - lows) * 1e3, (highs - medians) * 1e3], capsize=2.5,
                    fmt="--" if " tutorial " in f" {label} " else "-", color=colors[i % len(colors)],
                    marker=markers[label.split()[0]], ms=4, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("milliseconds per training step\n(median; bars: interquartile range of the repeats)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no line hidden under it
    return fig


def crossover_lines(rows: list[dict], x_key: str) -> dict[str, list[tuple[float, float]]]:
    """CPU time / GPU time against `x_key`, one line per pair of a CPU (the machine kind of its rows)
    and a GPU, and per backend × mode × dtype that both ran at two or more shared x values."""
    by_side: dict[tuple[str, str, str, str, str], dict[float, float]] = defaultdict(dict)
    for r in rows:
        kind = "cpu" if r["device"] == "cpu" else "gpu"
        side = (r.get("machine") or r.get("device_name", "")) if kind == "cpu" else r.get("device_name") or r["device"]
        by_side[(kind, side, r["backend"], r["mode"], r["dtype"])][r[x_key]] = r["seconds_per_step"]
    lines = {}
    for (kind, cpu, backend, mode, dtype), cpu_times in sorted(by_side.items()):
        if kind != "cpu":
            continue
        for (other, gpu, b, m, d), gpu_times in sorted(by_side.items()):
            if other != "gpu" or (b, m, d) != (backend, mode, dtype):
                continue
            shared = sorted(set(cpu_times) & set(gpu_times))
            if len(shared) >= 2:
                lines[f"{gpu} vs {cpu}: {backend} {mode} {dtype}"] = [(x, cpu_times[x] / gpu_times[x]) for x in shared]
    return lines


def crossover(title: str, rows: list[dict], x_key: str, x_label: str) -> bytes | None:
    """CPU time / GPU time per CPU/GPU pair, backend and mode against `x_key`: above 1 the GPU wins."""
    lines = crossover_lines(rows, x_key)
    if not lines:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5 + 0.12 * len(lines)))
    for label, points in lines.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=label)
    ax.axhline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("CPU time / GPU time (>1: GPU faster)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


#: the overhead figure's colours: (upper bound of the ratio, colour, legend text), first match wins
OVERHEAD_COLOURS = (
    (1.0, "tab:green", "green: ratio ≤ 1.00 (as fast as the hand-written loop, or faster)"),
    (1.1, "tab:orange", "orange: 1.00 < ratio ≤ 1.10 (slower by at most 10%)"),
    (float("inf"), "tab:red", "red: ratio > 1.10 (slower by more than 10%)"),
)


def overhead(rows: list[dict]) -> bytes | None:
    fig = overhead_figure(rows)
    return None if fig is None else _png(fig)


def overhead_figure(rows: list[dict]):
    """Each lowered mode's step time divided by its framework's hand-written loop, per case; the
    colour rule (OVERHEAD_COLOURS) spelt out in the legend."""
    bars = [(f"{r['suite']}/{r['case']}  {r['backend']} {r['mode']} {r['device']} {r['dtype']}", r["ratio_to_tutorial"])
            for r in rows if r.get("ratio_to_tutorial") is not None]
    if not bars:
        return None
    plt = _pyplot()
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(8.5, 0.28 * len(bars) + 2.6))
    labels, ratios = zip(*bars)
    colors = [next(color for bound, color, _ in OVERHEAD_COLOURS if r <= bound) for r in ratios]
    ax.barh(range(len(bars)), ratios, color=colors)
    ax.set_yticks(range(len(bars)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", lw=1)
    ax.axvline(1.1, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("ratio = step time / hand-written tutorial loop of the same framework (log; <1 is faster)")
    # the colour rule between the title and the bars (its three lines take about 40 points)
    ax.legend(handles=[Patch(color=color, label=text) for _, color, text in OVERHEAD_COLOURS], fontsize=7,
              loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1, frameon=False)
    ax.set_title("crossnn's lowerings against hand-written loops, same run", pad=44)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return fig


def values_bar(title: str, values: dict[str, float]) -> bytes | None:
    """Measured values side by side (log scale when they span more than two decades)."""
    if not values:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(values) + 1.4))
    labels, numbers = zip(*values.items())
    ax.barh(range(len(values)), [abs(v) for v in numbers], color="tab:blue")
    ax.set_yticks(range(len(values)), labels, fontsize=8)
    ax.invert_yaxis()
    positive = [abs(v) for v in numbers if v]
    if positive and max(positive) / min(positive) > 100:
        ax.set_xscale("log")
    for i, v in enumerate(numbers):
        ax.annotate(f"{v:.6g}", (abs(v), i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xlabel("measured value (absolute)")
    ax.set_title(f"{title}: measured on the installed frameworks")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


#: metric curves closer than this fraction of the panel's value range are drawn as one line
SAME_CURVE = 1e-3


def metric_curves(title: str, histories: dict[str, dict[str, list[float]]]) -> bytes | None:
    fig = metric_curves_figure(title, histories)
    return None if fig is None else _png(fig)


def _same_curve_groups(curves: dict[str, list[float]], tolerance: float) -> list[tuple[list[str], list[float]]]:
    """Curves grouped with the first earlier curve they agree with everywhere (within `tolerance`)."""
    groups: list[tuple[list[str], list[float]]] = []
    for label, values in curves.items():
        for labels, first in groups:
            if len(first) == len(values) and np.allclose(first, values, rtol=0.0, atol=tolerance, equal_nan=True):
                labels.append(label)
                break
        else:
            groups.append(([label], values))
    return groups


def metric_curves_figure(title: str, histories: dict[str, dict[str, list[float]]]):
    """Per-epoch metrics of every run (training solid, validation dashed), one panel per metric. Runs
    whose curves agree within SAME_CURVE of the panel's range share one line, labelled with all of them."""
    metrics = sorted({name.removeprefix("val_") for h in histories.values() for name in h})
    if not metrics:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for key, style, part in ((metric, "-", "training"), (f"val_{metric}", "--", "validation")):
            curves = {label: [float(v) for v in h[key]] for label, h in histories.items() if key in h}
            values = [v for c in curves.values() for v in c if np.isfinite(v)]
            span = (max(values) - min(values)) if values else 0.0
            for i, (labels, curve) in enumerate(_same_curve_groups(curves, SAME_CURVE * max(span, 1e-12))):
                runs = labels[0] if len(labels) == 1 else f"{len(labels)} runs: {', '.join(labels)}"
                ax.plot(range(1, len(curve) + 1), curve, style, lw=2.0 - 0.3 * (i % 4), alpha=0.85,
                        label=textwrap_label(f"{runs} ({part})"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{title}: {metric} per epoch\n(curves within {SAME_CURVE:.1%} of the range drawn once)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def textwrap_label(text: str, width: int = 60) -> str:
    """A legend label wrapped to `width` characters a line."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text
