"""reports/differences/: one page per catalog entry (what differs, the formulas, sources, what was
measured here, and a figure of the divergence it causes) and an index page."""

from __future__ import annotations

import time
from pathlib import Path

from crossnn.differences import Lab, Unavailable, entries, side_titles
from crossnn.files import replace_directory
from crossnn.report import check_replaceable, figures, with_manifest
from crossnn.spec.presets import show


def _page(entry, titles, findings, picture: str | None, error: str | None) -> str:
    lines = [f"# {entry.title} (`{entry.id}`)", "", entry.what, "", "| | |", "| --- | --- |",
             *(f"| {titles[name]} | {side} |" for name, side in entry.sides.items()),
             f"| crossnn's spec | {entry.spec} |"]
    if entry.defaults:
        lines += ["", "Presets (`defaults = ...` in a spec) fill in:", ""]
        for default in entry.defaults:
            values = ", ".join(f"`{preset}`: {show(value)}" for preset, value in default.values.items())
            lines.append(f"- `{default.label}`: {values}")
            lines += [f"  - `{preset}`: {note}." for preset, note in default.notes.items()]
    lines += ["", "Sources: " + "; ".join(f"`{s}`" if not s.startswith("http") else f"<{s}>" for s in entry.sources),
              "", "## Measured here", ""]
    if error:
        lines.append(f"Not measured: {error}")
    for f in findings:
        lines.append(f"- {'as documented' if f.holds else 'NOT as documented'}: {f.text}")
    if picture:
        lines += ["", f"![{entry.title}]({picture})"]
    return "\n".join(lines) + "\n"


def write_differences_report(root: Path = Path("reports"), name: str = "differences") -> Path:
    lab = Lab()
    pages, pictures, index = {}, {}, []
    catalog = entries()
    titles = side_titles(catalog)
    for entry in catalog:
        lab.history.clear()
        findings, error = [], None
        try:
            findings = entry.demonstrate(lab)
        except Unavailable as err:
            error = str(err)
        picture = None
        if lab.history:
            png = figures.parity_curves(entry.title, {d.label: d.curve for d in lab.history}, {})
        else:
            values = {k: v for f in findings for k, v in f.values.items()}
            png = figures.values_bar(entry.title, values) if values else None
        if png:
            picture = f"{entry.id}.png"
            pictures[picture] = png
        pages[f"{entry.id}.md"] = _page(entry, titles, findings, picture, error)
        verdict = "not measured" if error else ("as documented" if all(f.holds for f in findings) else "DIFFERS")
        index.append(f"| [{entry.title}]({entry.id}.md) | `{entry.id}` | {verdict} |")

    readme = ["# What differs between the frameworks, measured", "",
              f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by `crossnn report --differences` on the installed "
              "frameworks. Each page says what differs, the formula on each side, what crossnn's spec does, the "
              "sources, and what was measured here, with a figure: for entries that change training, the divergence "
              "from the NumPy float64 reference when one framework lowers the entry its own way; otherwise the "
              "measured values side by side.", "", "| entry | id | measured |", "| --- | --- | --- |", *index]

    def build(folder: Path) -> None:
        for filename, text in pages.items():
            (folder / filename).write_text(text)
        for filename, png in pictures.items():
            (folder / filename).write_bytes(png)
        (folder / "README.md").write_text("\n".join(readme) + "\n")

    target = root / name
    replace_directory(target, with_manifest(build), check_replaceable)
    return target
