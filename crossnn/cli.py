"""The `crossnn` command. Exit status: 0 parity passed, 1 parity failed, 2 bad input."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
from pathlib import Path

from crossnn.errors import CrossnnError, SpecError

EXIT_OK, EXIT_PARITY_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2 like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"crossnn: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crossnn", description=(
        "Lower one neural-network experiment spec to PyTorch, TensorFlow and NumPy, train every "
        "lowering from the same data, initial parameters and batch order, and compare them step by step."))
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    p = commands.add_parser("list", help="backends (availability, version, devices) and built-in examples")
    p.add_argument("--probe", action="store_true", help="import each framework to list its devices exactly")
    p.set_defaults(handler=cmd_list)

    p = commands.add_parser("show", help="summary of a spec: layers, output shapes, parameter counts")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE")
    p.set_defaults(handler=cmd_show)

    p = commands.add_parser("run", help="train specs on several backends and check parity")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE", nargs="+",
                   help="spec files or example names; 'seeds' runs the five seed examples")
    p.add_argument("--backends", help="comma-separated backend names (default: every available one)")
    p.add_argument("--dtype", default="float64", help="float64 (default) or float32, or both comma-separated")
    p.add_argument("--device", default="cpu", help="device for non-reference runs, e.g. cpu or cuda (default cpu)")
    p.add_argument("--mode", help="execution mode of each backend (default: each backend's first mode)")
    p.add_argument("--snapshot-every", type=int, metavar="N", help="compare parameters every N steps "
                   "(default: about 500 snapshots per run)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default per dtype)")
    p.add_argument("--atol", type=float, help="absolute tolerance (default per dtype)")
    p.add_argument("--json", metavar="OUT", help="write the full results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=cmd_run)

    p = commands.add_parser("bench", help="time training steps over backends, devices, modes, sizes and batch sizes")
    p.add_argument("spec", metavar="SPEC_OR_SUITE", nargs="*",
                   help="suites (seeds, mlp-width, fcn-r), spec files or examples (default: all three suites)")
    p.add_argument("--backends", help="comma-separated backend names (default: every available one)")
    p.add_argument("--devices", default="cpu", help="cpu and/or cuda, comma-separated (default cpu)")
    p.add_argument("--modes", help="comma-separated modes (default: every mode; with --quick the tutorial-style "
                                   "and the fast mode)")
    p.add_argument("--dtype", default="float32", help="float32 (default) and/or float64, comma-separated")
    p.add_argument("--quick", action="store_true", help="a subset that finishes in about two minutes")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5, at least 5 for reports)")
    p.add_argument("--json", metavar="OUT", help="write all rows, peaks and machine facts as JSON")
    p.set_defaults(handler=cmd_bench)

    p = commands.add_parser("report", help="write reports/<name>/: parity runs, benchmarks, figures, raw JSON")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE", nargs="*", help="specs whose parity runs the report shows "
                                                                      "(default: circle)")
    p.add_argument("--name", default="latest", help="report folder name under --out (default: latest)")
    p.add_argument("--out", default="reports", help="parent folder (default: reports)")
    p.add_argument("--backends", help="comma-separated backend names (default: every available one)")
    p.add_argument("--devices", default="cpu", help="benchmark devices: cpu and/or cuda (default cpu)")
    p.add_argument("--dtype", default="float64,float32", help="parity-run dtypes (default float64,float32)")
    p.add_argument("--suites", default="seeds,mlp-width,fcn-r", help="benchmark suites or specs (comma-separated)")
    p.add_argument("--quick", action="store_true", help="a quick benchmark subset")
    p.add_argument("--bench", metavar="JSON", help="use this `crossnn bench --json` file instead of benchmarking")
    p.add_argument("--no-bench", action="store_true", help="parity runs only")
    p.add_argument("--pytest-benchmark", metavar="JSON", help="add a pytest-benchmark --benchmark-json file")
    p.add_argument("--note", default="", help="a paragraph to put at the top of the report")
    p.add_argument("--run-json", metavar="JSON", action="append", default=[],
                   help="add a `crossnn run --json` file (e.g. made on another machine); repeatable")
    p.set_defaults(handler=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CrossnnError as err:
        if args.debug:
            traceback.print_exc()
        print(f"crossnn: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("crossnn: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: say so in one line unless asked for the traceback
        if args.debug:
            raise
        print(f"crossnn: internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


# ---- helpers ------------------------------------------------------------------------------------

def load_spec(text: str):
    """A spec file path, or the name of a built-in example."""
    from crossnn import examples
    from crossnn.spec import load

    path = Path(text)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise SpecError(f"no such spec file: {text}")
        return load(path)
    if text in examples.names():
        return load(examples.path(text))
    raise SpecError(f"'{text}' is neither a spec file nor an example; examples: {', '.join(examples.names())}")


#: names that stand for several examples
SUITES = {"seeds": ("adder", "line", "linear-2x3", "two-tower", "circle")}


def _expand_suite(name: str) -> tuple[str, ...]:
    return SUITES.get(name, (name,))


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


# ---- commands -----------------------------------------------------------------------------------

def cmd_list(args) -> int:
    from crossnn import backends, examples
    from crossnn.console import table

    rows = []
    for name, entry in backends.discover().items():
        b = entry.backend
        if entry.available:
            try:
                devices = ", ".join(b.devices(probe=args.probe))
            except Exception as err:  # probing imports the framework, which may be broken
                devices = f"probe failed: {type(err).__name__}: {err}"
            rows.append((name, "yes", b.version(), devices, ", ".join(b.modes),
                         "reference" if b.reference else ""))
        else:
            rows.append((name, "no", "", "", "", entry.reason))
    print("backends:")
    print(table(("name", "available", "version", "devices", "modes", "notes"), rows))
    if not args.probe:
        print("  (devices are detected without importing the frameworks; `crossnn list --probe` checks them)")
    print()
    print("examples:", ", ".join(examples.names()))
    return EXIT_OK


def cmd_show(args) -> int:
    from crossnn.summary import summary

    print(summary(load_spec(args.spec)))
    return EXIT_OK


def cmd_run(args) -> int:
    from crossnn import backends
    from crossnn.console import Progress, table
    from crossnn.data import load_dataset
    from crossnn.errors import BackendError
    from crossnn.harness import RunSpec, train
    from crossnn.parity import TOLERANCES, Tolerance, compare, tolerance_for
    from crossnn.results import result_json, run_text

    # everything the user typed is checked before any training starts
    experiments = [load_spec(text) for name in args.spec for text in _expand_suite(name)]
    datasets = [load_dataset(e) for e in experiments]
    names = _split(args.backends) or backends.available()
    dtypes = _split(args.dtype)
    for dtype in dtypes:
        if dtype not in TOLERANCES:
            raise BackendError(f"--dtype: unknown dtype '{dtype}'; use float32 or float64")
    if args.snapshot_every is not None and args.snapshot_every < 1:
        raise SpecError(f"--snapshot-every: must be >= 1, got {args.snapshot_every}")
    for name in names:
        backends.get(name)  # unknown or unavailable backends are bad input: say so before training
    if args.mode and not any(args.mode in backends.get(name).modes for name in names):
        raise BackendError(f"--mode: no chosen backend has mode '{args.mode}'")

    def mode(name):
        return args.mode if args.mode in backends.get(name).modes else None

    def tolerance(record):
        default = tolerance_for(record.spec.dtype, record.spec.device)
        return Tolerance(args.rtol if args.rtol is not None else default.rtol,
                         args.atol if args.atol is not None else default.atol)

    runs = [RunSpec(name, dtype, "cpu" if backends.get(name).reference else args.device, mode(name))
            for dtype in dtypes for name in names]
    outcomes = []
    for experiment, dataset in zip(experiments, datasets):
        result = train(experiment, runs, snapshot_every=args.snapshot_every, dataset=dataset,
                       progress=Progress(enabled=not args.quiet))
        parities = {id(r): compare(result.reference, r, tolerance(r)) for r in result.records}
        if len(experiments) > 1:
            print(f"==== {experiment.name} " + "=" * max(0, 70 - len(experiment.name)))
        print(run_text(result, parities))
        print()
        outcomes.append((result, parities))

    if len(outcomes) > 1:
        totals: dict[str, float] = {}
        rows = []
        for result, parities in outcomes:
            for r in result.records:
                totals[r.spec.label] = totals.get(r.spec.label, 0.0) + r.train_seconds
                verdict = "reference" if r is result.reference else ("pass" if parities[id(r)].passed else "FAIL")
                rows.append((result.experiment.name, r.spec.label, f"{r.train_seconds:.2f}", verdict))
        print("summary:")
        print(table(("experiment", "run", "train s", "parity"), rows))
        print()
        print("training time per run, all experiments:")
        print(table(("run", "train s"), [(label, f"{seconds:.2f}") for label, seconds in totals.items()]))
    if args.json:
        from crossnn.files import write_text_atomic

        documents = [result_json(result, parities) for result, parities in outcomes]
        document = documents[0] if len(documents) == 1 else {"experiments": documents}
        write_text_atomic(Path(args.json), json.dumps(document, indent=1))
        print(f"results written to {args.json}")
    failed = [p for _, parities in outcomes for p in parities.values() if not p.passed]
    return EXIT_PARITY_FAILED if failed else EXIT_OK


def cmd_bench(args) -> int:
    from crossnn import backends
    from crossnn.bench.report_table import bench_table
    from crossnn.bench.runner import run_bench
    from crossnn.bench.select import device_kind
    from crossnn.bench.suites import SUITES, cases_for
    from crossnn.errors import BackendError
    from crossnn.parity import TOLERANCES

    cases = cases_for(args.spec or list(SUITES), args.quick)
    names = _split(args.backends) or backends.available()
    for name in names:
        backends.get(name)
    dtypes = _split(args.dtype)
    for dtype in dtypes:
        if dtype not in TOLERANCES:
            raise BackendError(f"--dtype: unknown dtype '{dtype}'; use float32 or float64")
    devices = _split(args.devices)
    for device in devices:
        if device_kind(device) is None:
            raise BackendError(f"--devices: unknown device '{device}'; use cpu or cuda")
    if args.repeats < 1:
        raise SpecError(f"--repeats: must be >= 1, got {args.repeats}")
    def save(result):
        if args.json:
            from crossnn.files import write_text_atomic

            write_text_atomic(Path(args.json), json.dumps(result.to_json(), indent=1))

    result = run_bench(cases, names, devices, dtypes, modes=_split(args.modes) or None, quick=args.quick,
                       repeats=args.repeats, min_repeat_seconds=0.05 if args.quick else 0.2,
                       say=lambda text: print(text, file=sys.stderr, flush=True), after_case=save)
    print(bench_table(result))
    if args.json:
        print(f"results written to {args.json} (rewritten after every case)")
    return EXIT_OK


def _read_json(path: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SpecError(f"{what}: cannot read {path}: {err}") from None


def _without_note(argv: list[str]) -> str:
    """The command line as typed, minus the --note text (shown on the page anyway)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            kept.append(arg)
    return shlex.join(kept)


def cmd_report(args) -> int:
    from crossnn import backends
    from crossnn.bench.runner import run_bench
    from crossnn.bench.suites import cases_for
    from crossnn.console import Progress
    from crossnn.harness import RunSpec, train
    from crossnn.parity import compare
    from crossnn.report import ReportInputs, write_report
    from crossnn.results import result_json

    default_specs = [] if args.run_json else ["circle"]
    experiments = [load_spec(text) for name in (args.spec or default_specs) for text in _expand_suite(name)]
    names = _split(args.backends) or backends.available()
    for name in names:
        backends.get(name)
    bench = _read_json(args.bench, "--bench") if args.bench else None
    pytest_benchmark = _read_json(args.pytest_benchmark, "--pytest-benchmark") if args.pytest_benchmark else None
    if bench is not None and bench.get("kind") != "crossnn-bench":
        raise SpecError(f"--bench: {args.bench} is not a `crossnn bench --json` file")
    cases = cases_for(_split(args.suites), args.quick) if bench is None and not args.no_bench else []
    command = "crossnn report " + _without_note(sys.argv[2:]) if sys.argv[1:2] == ["report"] else "crossnn report"

    def say(text):
        print(text, file=sys.stderr, flush=True)

    runs = []
    for path in args.run_json:
        doc = _read_json(path, "--run-json")
        documents = doc.get("experiments", [doc])  # one experiment, or several from one `crossnn run`
        if not all("experiment" in d and "runs" in d for d in documents):
            raise SpecError(f"--run-json: {path} is not a `crossnn run --json` file")
        runs += documents
    for experiment in experiments:
        say(f"parity run: {experiment.name}")
        specs = [RunSpec(name, dtype) for dtype in _split(args.dtype) for name in names]
        result = train(experiment, specs, progress=Progress())
        parities = {id(r): compare(result.reference, r) for r in result.records}
        runs.append(result_json(result, parities))
    if cases:
        say(f"benchmark: {len(cases)} case(s)")
        bench = run_bench(cases, names, _split(args.devices), ["float32"], quick=args.quick,
                          min_repeat_seconds=0.05 if args.quick else 0.2, say=say).to_json()
    target = write_report(ReportInputs(args.name, command, runs, bench, pytest_benchmark, note=args.note),
                          Path(args.out))
    print(f"report written to {target}/README.md")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
