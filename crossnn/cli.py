"""The `crossnn` command. Exit status: 0 parity passed, 1 parity failed, 2 bad input, 3 internal error,
130 interrupted (Ctrl-C)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import textwrap
import traceback
from pathlib import Path

from crossnn.errors import CrossnnError, SpecError

EXIT_OK, EXIT_PARITY_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2 like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"crossnn: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crossnn", description=(
        "Lower one neural-network experiment spec to every installed framework (`crossnn list` shows them), "
        "train every lowering from the same data, initial parameters and batch order, and compare them step "
        "by step."))
    from crossnn import __version__

    parser.add_argument("--version", action="version", version=f"crossnn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    # --debug is accepted after the command too; SUPPRESS keeps the subcommand from resetting it
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    add_parser = commands.add_parser
    commands.add_parser = lambda *a, **k: add_parser(*a, parents=[debug], **k)

    p = commands.add_parser("list", help="backends (availability, version, devices) and built-in examples")
    p.add_argument("--probe", action="store_true", help="import each framework to list its devices exactly")
    p.set_defaults(handler=cmd_list)

    p = commands.add_parser("show", help="summary of a spec: layers, output shapes, parameter counts")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE")
    p.add_argument("--resolved", action="store_true",
                   help="print the spec as TOML with every value written out (a preset's values in place)")
    p.set_defaults(handler=cmd_show)

    p = commands.add_parser("run", help="train specs on several backends and check parity")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE", nargs="+",
                   help="spec files or example names; 'seeds' runs the five seed examples")
    p.add_argument("--backends", help="comma-separated backend names (default: every available one)")
    p.add_argument("--dtype", default="float64", help="float64 (default) or float32, or both comma-separated")
    p.add_argument("--device", default="cpu", help="device of the non-reference runs, cpu or cuda[:N], or several "
                                                   "comma-separated (default cpu)")
    p.add_argument("--mode", help="execution modes, comma-separated: each backend runs every listed mode it has; "
                                  "a named backend with none of them is an error, an unnamed one is left out "
                                  "(default: each backend's first mode; `crossnn list` shows them)")
    p.add_argument("--threads", type=int, metavar="N", help="intra-op threads of every framework (torch, TensorFlow, "
                                                            "NumPy's BLAS through threadpoolctl; a backend that cannot "
                                                            "change them after start-up refuses another count); "
                                                            "recorded in the JSON")
    p.add_argument("--snapshot-every", type=int, metavar="N", help="compare parameters every N steps "
                   "(default: about 500 snapshots per run)")
    p.add_argument("--rtol", type=float, help="relative tolerance (default per dtype)")
    p.add_argument("--atol", type=float, help="absolute tolerance (default per dtype)")
    p.add_argument("--json", metavar="OUT", help="write the full results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--flavor", choices=("spec", "native"), default="spec",
                   help="spec: the spec's formulas everywhere (default); native: each framework's own built-ins "
                        "and defaults, with the catalog entries behind each difference measured")
    p.add_argument("--stop-after", type=int, metavar="STEPS", help="stop after this many steps in all (with --save)")
    p.add_argument("--save", metavar="PATH", help="write the stopped run's training state to a checkpoint (.npz)")
    p.add_argument("--resume", metavar="PATH", help="continue the runs from a checkpoint of this spec")
    p.add_argument("--force", action="store_true", help="replace an existing output file that crossnn did not write")
    p.set_defaults(handler=cmd_run)

    p = commands.add_parser("diff", help="the catalog entries that apply to a spec, and the divergence each causes")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE")
    p.add_argument("--backends", help="comma-separated backend names (default: every available one)")
    p.add_argument("--dtype", default="float64", help="float64 (default) or float32")
    p.set_defaults(handler=cmd_diff)

    p = commands.add_parser("differences", help="the catalog of framework differences, with measured demonstrations")
    p.add_argument("entry", nargs="*", help="entry ids to show and demonstrate (default: list them all)")
    p.add_argument("--markdown", action="store_true", help="print the catalog as the README's Markdown table")
    p.add_argument("--presets", action="store_true",
                   help="print what each preset (defaults = \"torch\" | \"keras\") fills, as the README's table")
    p.set_defaults(handler=cmd_differences)

    p = commands.add_parser("code", help="a standalone tutorial-style training script for a spec, per framework")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE")
    p.add_argument("--backend", help="the framework to write it for (an installed backend: crossnn list)")
    p.add_argument("--out", metavar="FILE", help="write the script here instead of printing it")
    p.add_argument("--side-by-side", action="store_true", help="the scripts of several backends in columns")
    p.add_argument("--backends", help="with --side-by-side: comma-separated backends (default: every available one)")
    p.add_argument("--html", metavar="FILE", help="with --side-by-side: write an HTML page instead")
    p.add_argument("--width", type=int, help="with --side-by-side: total width in characters (default: the terminal's)")
    p.add_argument("--force", action="store_true", help="replace an existing output file that crossnn did not write")
    p.set_defaults(handler=cmd_code)

    p = commands.add_parser("export", help="convert a checkpoint to a framework's own format")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--backend", required=True, help="the backend whose framework's own format to write, e.g. torch "
                                                     "(model and optimizer state_dict) or tensorflow (Keras "
                                                     ".weights.h5); the command says what it wrote")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace an existing output file that crossnn did not write")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("import", help="read a framework's own checkpoint into a crossnn checkpoint")
    p.add_argument("native", metavar="FILE")
    p.add_argument("--backend", required=True, help="the framework that wrote FILE")
    p.add_argument("--spec", required=True, metavar="SPEC_OR_EXAMPLE", help="the spec the model was trained from")
    p.add_argument("--out", required=True, metavar="CHECKPOINT")
    p.add_argument("--force", action="store_true", help="replace an existing output file that crossnn did not write")
    p.set_defaults(handler=cmd_import)

    p = commands.add_parser("bench", help="time training steps over backends, devices, modes, sizes and batch sizes")
    p.add_argument("spec", metavar="SPEC_OR_SUITE", nargs="*",
                   help="suites (seeds, mlp-width, fcn-r, alexnet-r, resnet-r, lstm-r), spec files or examples "
                        "(default: every suite)")
    p.add_argument("--backends", help="comma-separated backend names (default: every available one)")
    p.add_argument("--devices", default="cpu", help="cpu and/or cuda, comma-separated (default cpu)")
    p.add_argument("--modes", help="comma-separated modes (default: every mode; with --quick the tutorial-style "
                                   "and the fast mode for the device)")
    p.add_argument("--dtype", help="float32 (default; float64 with --to-metric) and/or float64, comma-separated")
    p.add_argument("--quick", action="store_true", help="a subset: circle and two-tower, three MLP widths, one batch "
                                                         "size of each other suite, and per backend the tutorial-style "
                                                         "loop and the fast mode for the device")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (default 5, at least 5 for reports)")
    p.add_argument("--json", metavar="OUT", help="write all rows, peaks and machine facts as JSON")
    p.add_argument("--in-process", action="store_true",
                   help="time every backend in this process instead of one fresh process per backend (starts "
                        "sooner; frameworks loaded side by side slow each other down)")
    p.add_argument("--executor", default="local", metavar="local|dask[=ADDRESS]",
                   help="local (default): a fresh process per backend here; dask: each backend x case as a task on "
                        "a Dask cluster, a LocalCluster here or the scheduler at ADDRESS (needs crossnn[dask])")
    p.add_argument("--dask-workers", type=int, default=1, metavar="N",
                   help="with --executor dask and no address: LocalCluster workers, each pinned to its share of "
                        "the cores (default 1)")
    p.add_argument("--to-metric", metavar="METRIC=VALUE",
                   help="time to accuracy: train each backend x mode of one SPEC until the held-out METRIC first "
                        "reaches VALUE (e.g. accuracy=0.97), over --runs data orders (dtype default float64)")
    p.add_argument("--runs", type=int, default=5, help="with --to-metric: runs per backend x mode, each with its own "
                                                       "data order; the fastest and slowest are dropped (default 5)")
    p.add_argument("--force", action="store_true", help="replace an existing output file that crossnn did not write")
    p.set_defaults(handler=cmd_bench)

    p = commands.add_parser("report", help="write reports/<name>/: parity runs, benchmarks, figures, raw JSON")
    p.add_argument("spec", metavar="SPEC_OR_EXAMPLE", nargs="*", help="specs whose parity runs the report shows "
                                                                      "(default: circle)")
    p.add_argument("--name", default="latest", help="report folder name under --out (default: latest)")
    p.add_argument("--out", default="reports", help="parent folder (default: reports)")
    p.add_argument("--backends", help="comma-separated backend names (default: every available one)")
    p.add_argument("--devices", default="cpu", help="benchmark devices: cpu and/or cuda (default cpu)")
    p.add_argument("--dtype", default="float64,float32", help="parity-run dtypes (default float64,float32)")
    p.add_argument("--suites", default="seeds,mlp-width,fcn-r,alexnet-r,resnet-r,lstm-r",
                   help="benchmark suites or specs (comma-separated)")
    p.add_argument("--quick", action="store_true", help="a quick benchmark subset")
    p.add_argument("--bench", metavar="JSON", help="use this `crossnn bench --json` file instead of benchmarking")
    p.add_argument("--no-bench", action="store_true", help="parity runs only")
    p.add_argument("--pytest-benchmark", metavar="JSON", help="add a pytest-benchmark --benchmark-json file")
    p.add_argument("--note", default="", help="a paragraph to put at the top of the report")
    p.add_argument("--differences", action="store_true",
                   help="write reports/differences/: a page per catalog entry with its measured divergence")
    p.add_argument("--run-json", metavar="JSON", action="append", default=[],
                   help="add a `crossnn run --json` file (e.g. made on another machine); repeatable")
    p.set_defaults(handler=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; Ctrl-C at any point from here on (frameworks loading included) is one line
    and exit status 130. Importing this module loads nothing heavy, so the window before is short."""
    args = None
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except CrossnnError as err:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"crossnn: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("crossnn: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`crossnn ... | head`): stop quietly, like a SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except Exception as err:  # a bug: say so in one line unless asked for the traceback
        if getattr(args, "debug", False):
            raise
        print(f"crossnn: internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


# ---- helpers ------------------------------------------------------------------------------------

def load_spec(text: str):
    """crossnn.api.load_spec, imported when first used (so that importing this module stays light)."""
    from crossnn.api import load_spec

    return load_spec(text)


def read_spec(text: str):
    from crossnn.api import read_spec

    return read_spec(text)


def load_data(experiment, where: str):
    from crossnn.api import load_data

    return load_data(experiment, where)


def _expand_suite(name: str) -> tuple[str, ...]:
    """'seeds' stands for the five seed examples; any other name for itself."""
    from crossnn import examples

    return examples.SEEDS if name == "seeds" else (name,)


def _devices(text: str) -> list[str]:
    """The --devices list, each name checked (cpu, cuda[:N] or gpu[:N])."""
    from crossnn.validate import check_devices

    return check_devices(text, "--devices")


def _chosen_backends(text: str | None) -> list[str]:
    """The backends --backends names, or every available one, with their frameworks imported. A named
    backend whose framework fails to import is bad input; a default one is left out, with the reason
    on stderr."""
    from crossnn import backends
    from crossnn.errors import BackendError
    from crossnn.validate import name_list

    requested = name_list(text, "--backends")  # [] for None; '' and ',' name nothing and are refused
    for name in requested:
        backends.get(name, "--backends")  # unknown or uninstalled: one line saying why
    names = requested or backends.available()
    failed = backends.prepare(names)
    if requested and failed:
        name, reason = next(iter(failed.items()))
        raise BackendError(f"backend '{name}' is unavailable: {reason}")
    for name, reason in failed.items():
        print(f"crossnn: backend '{name}' left out: {reason}", file=sys.stderr)
    return [name for name in names if name not in failed]


# ---- commands -----------------------------------------------------------------------------------

def cmd_list(args) -> int:
    from crossnn import backends, examples
    from crossnn.console import table

    if args.probe:
        backends.prepare(backends.available())  # a framework that fails to import is listed unavailable
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
    from crossnn.spec import dumps
    from crossnn.spec.presets import show
    from crossnn.summary import summary

    experiment, fills = read_spec(args.spec)
    notes = [f"{fill.path}: {fill.note} (crossnn differences {fill.entry})" for fill in fills if fill.note]
    if args.resolved:
        sys.stdout.write(dumps(experiment))  # plain TOML: the notes go to stderr
        for note in notes:
            print(f"crossnn: note: {note}", file=sys.stderr)
        return EXIT_OK
    print(summary(experiment))
    if fills:
        print(f"\nfilled from the {fills[0].preset} preset (crossnn show --resolved writes them out):")
        for fill in fills:
            print(f"  {fill.path} = {show(fill.value)}  ({fill.entry})")
        for note in notes:
            print(_wrapped(f"note: {note}"))
    return EXIT_OK


def cmd_run(args) -> int:
    from crossnn.files import STDOUT, write_text_output

    if args.json != STDOUT:
        return _run(args)
    with contextlib.redirect_stdout(sys.stderr):  # the JSON owns standard output; the tables go beside it
        code, text = _run(args, json_only=True)
    write_text_output(STDOUT, text)
    return code


#: the run command's option for each argument crossnn.selection checks
RUN_OPTIONS = {"backends": "--backends", "dtypes": "--dtype", "devices": "--device", "modes": "--mode"}


def _run(args, json_only: bool = False):
    """`crossnn run`: its exit status, or with json_only (for --json -) the status and the JSON text."""
    from crossnn.api import Result, compare_all
    from crossnn.checkpoint import load_checkpoint
    from crossnn.console import Progress, table
    from crossnn.harness import check_stop, train
    from crossnn.plan import BatchPlan
    from crossnn.selection import select_runs, start
    from crossnn.validate import check_count, check_tolerance

    # everything the user typed is checked before any training starts
    check_count(args.snapshot_every, "--snapshot-every")
    check_count(args.stop_after, "--stop-after")
    check_count(args.threads, "--threads")
    rtol, atol = check_tolerance(args.rtol, "--rtol"), check_tolerance(args.atol, "--atol")
    _refuse_empty(args, resume="--resume")
    selection = select_runs(args.backends, args.dtype, args.device, args.mode, native=args.flavor == "native",
                            options=RUN_OPTIONS)  # names checked before any framework loads
    texts = [text for name in args.spec for text in _expand_suite(name)]
    experiments = [load_spec(text) for text in texts]
    inputs = _spec_inputs(experiments)
    if args.resume:
        inputs[args.resume] = "the checkpoint this command resumes"
    _check_outputs(args, inputs, json="--json", save="--save")
    datasets = [load_data(e, text) for e, text in zip(experiments, texts)]
    _check_checkpoint_options(args, len(experiments), len(selection.runs))
    resume = load_checkpoint(Path(args.resume), experiments[0])[1] if args.resume else None
    if args.stop_after is not None:
        plan = BatchPlan.for_experiment(experiments[0], datasets[0].n)
        check_stop(args.stop_after, plan.steps, resume.step if resume else None, "--stop-after")
    selection = start(selection, RUN_OPTIONS["devices"])  # imports the frameworks
    for note in selection.notes:
        _stderr(f"crossnn: {note}")

    outcomes: list[Result] = []
    for experiment, dataset in zip(experiments, datasets):
        harness = train(experiment, selection.runs, snapshot_every=args.snapshot_every, dataset=dataset,
                        progress=Progress(enabled=not args.quiet), resume=resume, stop_after=args.stop_after,
                        threads=args.threads, threads_option="--threads")
        result = Result(harness, compare_all(harness, rtol, atol), [*selection.notes, *harness.notes])
        for note in harness.notes:
            _stderr(f"crossnn: {note}")
        if len(experiments) > 1:
            print(f"==== {experiment.name} " + "=" * max(0, 70 - len(experiment.name)))
        print(result.table())
        print()
        if args.save:
            _save_stopped(args.save, experiment, harness.records[0])
        if args.flavor == "native":
            print(native_explanation(experiment, harness, result.parities,
                                     say=(lambda text: None) if args.quiet else _stderr))
        outcomes.append(result)

    if len(outcomes) > 1:
        totals: dict[str, float] = {}
        rows = []
        for result in outcomes:
            for r in result.harness.records:
                totals[r.spec.label] = totals.get(r.spec.label, 0.0) + r.train_seconds
                verdict = "reference" if r is result.reference else ("pass" if result.parities[id(r)].passed
                                                                     else "FAIL")
                rows.append((result.experiment.name, r.spec.label, f"{r.train_seconds:.2f}", verdict))
        print("summary:")
        print(table(("experiment", "run", "train s", "parity"), rows))
        print()
        print("training time per run, all experiments:")
        print(table(("run", "train s"), [(label, f"{seconds:.2f}") for label, seconds in totals.items()]))
    code = EXIT_OK if all(result.passed for result in outcomes) else EXIT_PARITY_FAILED
    if args.json:
        from crossnn.bench.machine import describe
        from crossnn.files import json_text, write_text_atomic

        machine = describe()
        documents = [result.to_json(machine) for result in outcomes]
        text = json_text(documents[0] if len(documents) == 1 else
                         {"crossnn_version": documents[0]["crossnn_version"], "experiments": documents})
        if json_only:
            return code, text
        write_text_atomic(Path(args.json), text)
        print(f"results written to {args.json}")
    return code


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def native_explanation(experiment, result, parities, say=_stderr) -> str:
    """Which catalog entries the native runs used, and the divergence each causes on its own; `say`
    reports each measuring run as it starts."""
    from crossnn.console import sci, table
    from crossnn.differences import BY_ID, applicable, measure

    relevant = {e.id for e in applicable(experiment)}
    rows, names = [], []
    for record in result.records:
        if record.spec.native and record.spec.backend not in names:
            names.append(record.spec.backend)
    if not names:
        return "native flavour: no backend here lowers any catalog entry differently from the spec"
    effects = measure(experiment, names, dtype=result.records[0].spec.dtype,
                      entries=[BY_ID[i] for i in sorted(relevant)], snapshot_every=result.snapshot_every, say=say)
    for effect in effects:
        rows.append((effect.backend, effect.entry.id, sci(effect.divergence.max_rel), sci(effect.divergence.final_rel)))
    unused = sorted({i for r in result.records for i in r.spec.native} - relevant)
    text = ["catalog entries behind the native runs' divergence (each lowered natively on its own):"]
    text.append(table(("backend", "entry", "max rel", "final rel"), rows) + "\n" + _lowerings(effects) if rows
                else "  none of the backends' native lowerings touch this spec")
    if unused:
        text.append(f"  entries that do not apply to this spec: {', '.join(unused)}")
    text.append("  (crossnn differences ENTRY explains an entry; crossnn diff SPEC measures them all)")
    return "\n".join(text)


def _wrapped(text: str) -> str:
    return textwrap.fill(text, width=100, initial_indent="  ", subsequent_indent="      ")


def _lowerings(effects) -> str:
    """What each measured native lowering does, one wrapped paragraph per entry and backend."""
    return "how they were lowered:\n" + "\n".join(_wrapped(f"{e.entry.id}, {e.backend}: {e.native}") for e in effects)


def cmd_diff(args) -> int:
    from crossnn import backends
    from crossnn.console import sci, table
    from crossnn.differences import Lab, Unavailable, applicable, measure
    from crossnn.validate import check_dtypes

    dtypes = check_dtypes(args.dtype, "--dtype")
    if len(dtypes) > 1:
        raise SpecError(f"--dtype: diff measures one dtype at a time, got {', '.join(dtypes)}")
    experiment = load_spec(args.spec)
    names = [n for n in _chosen_backends(args.backends) if backends.get(n).native_entries]
    lab = Lab()
    effects = measure(experiment, names, lab, dtypes[0], snapshot_every=None, say=_stderr)
    print(f"{experiment.name}: catalog entries that apply, and the divergence each causes when one framework lowers "
          f"it its own way (max relative parameter difference from the NumPy {dtypes[0]} reference)")
    print(table(("entry", "backend", "max rel", "final rel", "first step > 1e-9"),
                [(e.entry.id, e.backend, sci(e.divergence.max_rel), sci(e.divergence.final_rel),
                  "-" if e.divergence.first_step_over_1e9 is None else e.divergence.first_step_over_1e9)
                 for e in effects]))
    if effects:
        print(_lowerings(effects))
    measured = {e.entry.id for e in effects}
    others = [entry for entry in applicable(experiment) if entry.id not in measured]
    if others:
        print("\nentries that apply but change no training here (measured on the frameworks instead):")
        for entry in others:
            try:
                findings = entry.demonstrate(lab)
                print(_wrapped(f"{entry.id}: " + "; ".join(f.text for f in findings)))
            except Unavailable as err:
                print(_wrapped(f"{entry.id}: not measured: {err}"))
    return EXIT_OK


def cmd_differences(args) -> int:
    from crossnn.differences import Lab, Unavailable, entries, presets_section, readme_section, side_titles
    from crossnn.spec.presets import show

    if args.markdown or args.presets:
        tables = ((args.markdown, readme_section), (args.presets, presets_section))
        print("\n\n".join(table() for wanted, table in tables if wanted))
        return EXIT_OK
    catalog = entries()
    if not args.entry:
        for entry in catalog:
            print(f"  {entry.id:<24} {entry.title}")
        print("\ncrossnn differences ID shows an entry and measures it on the installed frameworks")
        return EXIT_OK
    by_id, titles = {entry.id: entry for entry in catalog}, side_titles(catalog)
    width = max(len(label) for label in (*titles.values(), "crossnn spec")) + 2
    lab = Lab()
    for name in args.entry:
        if name not in by_id:
            raise SpecError(f"no catalog entry '{name}'; entries: {', '.join(by_id)}")
        entry = by_id[name]
        print(f"{entry.title} ({entry.id})\n\n{entry.what}\n")
        for backend, side in entry.sides.items():
            print(f"  {titles[backend] + ':':<{width}}{side}")
        print(f"  {'crossnn spec:':<{width}}{entry.spec}")
        for default in entry.defaults:
            values = ", ".join(f"{preset} {show(value)}" for preset, value in default.values.items())
            print(f"  {'presets:':<{width}}{default.label} = {values}")
        print(f"  {'sources:':<{width}}" + ("\n" + " " * (width + 2)).join(entry.sources))
        try:
            for finding in entry.demonstrate(lab):
                verdict = "as documented" if finding.holds else "NOT as documented"
                print(f"  {'measured:':<{width}}{finding.text} [{verdict}]")
        except Unavailable as err:
            print(f"  {'measured:':<{width}}not here: {err}")
        print()
    return EXIT_OK


def _check_outputs(args, inputs: dict[str, str] | None = None, **options: str) -> None:
    """Check every output path the user gave (attribute -> option name) before any work starts: it
    can be written, it is none of the command's `inputs` (path -> what it is), no two options name
    one file, and an existing file there is crossnn's own output unless --force was given."""
    from crossnn.errors import OutputError
    from crossnn.files import STDOUT, check_output_path

    taken: dict[str, str] = {}
    for attribute, option in options.items():
        path = getattr(args, attribute, None)
        if path is None:
            continue
        check_output_path(path, option, stdout=option == "--json", inputs=inputs or {},
                          force=getattr(args, "force", False))
        if path != STDOUT:
            key = os.path.realpath(path)
            if key in taken:
                raise OutputError(f"{option} {path}: {taken[key]} writes that file too; give each output its own")
            taken[key] = option


def _refuse_empty(args, **options: str) -> None:
    """An input path option given as '' (attribute -> option name) is bad input, not left out."""
    for attribute, option in options.items():
        values = getattr(args, attribute, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and not value.strip():
                raise SpecError(f"{option}: the path is empty")


def _spec_inputs(experiments) -> dict[str, str]:
    """The files the experiments are read from: their spec files and data files, by what each is."""
    inputs = {}
    for experiment in experiments:
        if experiment.source:
            inputs[experiment.source] = "this command's spec file"
        for path in experiment.data.files(experiment.base_dir):
            inputs[str(path)] = "this command's data file"
    return inputs


def _check_checkpoint_options(args, n_specs: int, n_runs: int) -> None:
    """--stop-after, --save and --resume fit together (checked before any framework is imported)."""
    if (args.save is None) != (args.stop_after is None):
        raise SpecError("--stop-after and --save go together: stop after N steps and save the state")
    if (args.save or args.resume) and n_specs != 1:
        raise SpecError("--save and --resume take one spec")
    if args.save and n_runs != 1:
        raise SpecError("--save: choose one backend and one dtype, in one mode (e.g. --backends torch --dtype float64)")


def _save_stopped(path: str, experiment, record) -> None:
    from crossnn.checkpoint import save_checkpoint
    from crossnn.results import parameters_text

    if record.final_state is None:
        raise SpecError(f"--save: the {record.spec.label} run did not finish its steps ({record.message})")
    save_checkpoint(Path(path), experiment, record.final_state)
    print(f"training state after step {record.final_state.step} of {record.spec.label} saved to {path}; "
          "its parameters:\n" + parameters_text(record.final_state.params))


def _side_file(script: str) -> Path:
    """The .npz beside an emitted script that holds its data and initial parameters."""
    path = Path(script)
    return path.with_name(path.stem + ".npz")


def cmd_code(args) -> int:
    from crossnn import backends
    from crossnn.codegen import side_arrays
    from crossnn.files import check_output_path, write_npz_atomic, write_text_atomic
    from crossnn.params import initial_parameters
    from crossnn.sidebyside import columns, columns_width, html_page

    if not args.side_by_side:
        for option in ("backends", "html", "width"):
            if getattr(args, option) is not None:
                raise SpecError(f"--{option} goes with --side-by-side")
    elif args.backend or args.out:
        raise SpecError("--side-by-side takes --backends (several) and --html, not --backend or --out")
    experiment = load_spec(args.spec)
    inputs = _spec_inputs([experiment])
    _check_outputs(args, inputs, out="--out", html="--html")
    side = _side_file(args.out) if args.out else None
    if side is not None:
        check_output_path(side, "--out (its data file)", inputs=inputs, force=args.force)
    data, params = load_data(experiment, args.spec), initial_parameters(experiment)
    if not args.side_by_side:
        if not args.backend:
            raise SpecError(f"--backend: name the framework ({', '.join(backends.discover())}), or use --side-by-side")
        backends.get(args.backend, "--backend")
        backends.prepare([args.backend])  # a framework that fails to import: get() raises with the reason
        if side is None:
            print(backends.get(args.backend).script(experiment, params, data), end="")
            return EXIT_OK
        text = backends.get(args.backend).script(experiment, params, data, side_file=side.name)
        write_npz_atomic(side, side_arrays(data, params))
        write_text_atomic(Path(args.out), text)
        print(f"{args.backend} script for {experiment.name} written to {args.out}, its data to {side}")
        return EXIT_OK
    names = _chosen_backends(args.backends)
    narrowest = columns_width(len(names))
    if args.width is not None and args.width < narrowest:
        raise SpecError(f"--width: {args.width} is too narrow for {len(names)} column(s); give at least {narrowest}")
    scripts = {name: backends.get(name).script(experiment, params, data) for name in names}
    if args.html:
        write_text_atomic(Path(args.html), html_page(experiment.name, scripts))
        print(f"side-by-side page for {experiment.name} written to {args.html}")
    else:
        print(columns(scripts, args.width))
    return EXIT_OK


def cmd_export(args) -> int:
    from crossnn import backends
    from crossnn.checkpoint import load_checkpoint

    _check_outputs(args, {args.checkpoint: "the checkpoint this command exports"}, out="--out")
    backends.get(args.backend, "--backend")
    experiment, state = load_checkpoint(Path(args.checkpoint))
    backends.prepare([args.backend])
    holds = backends.get(args.backend).export_native(experiment, state, Path(args.out))
    print(f"{args.checkpoint} (step {state.step}) written as {args.backend}'s own format to {args.out}: {holds}")
    return EXIT_OK


def cmd_import(args) -> int:
    from crossnn import backends
    from crossnn.checkpoint import save_checkpoint

    backends.get(args.backend, "--backend")
    experiment = load_spec(args.spec)
    _check_outputs(args, {**_spec_inputs([experiment]), args.native: "the file this command imports"}, out="--out")
    backends.prepare([args.backend])
    backend = backends.get(args.backend)
    state = backend.import_native(experiment, Path(args.native))
    save_checkpoint(Path(args.out), experiment, state)
    print(f"{args.native} read as {args.backend}'s format; crossnn checkpoint (step {state.step}) "
          f"written to {args.out}")
    return EXIT_OK


def cmd_bench(args) -> int:
    from crossnn import backends
    from crossnn.bench.report_table import bench_table
    from crossnn.bench.runner import parse_executor, run_bench
    from crossnn.bench.suites import SUITES, cases_for
    from crossnn.errors import BackendError
    from crossnn.files import STDOUT, json_text, write_text_atomic, write_text_output
    from crossnn.validate import check_count, check_dtypes, name_list

    kind, address = parse_executor(args.executor)
    check_count(args.dask_workers, "--dask-workers")
    if args.dask_workers != 1 and (kind != "dask" or address):
        raise SpecError("--dask-workers: goes with --executor dask (no address): it sizes the LocalCluster here")
    if kind == "dask" and args.in_process:
        raise SpecError("--in-process: the dask executor times each job in a process of its own")
    if args.to_metric is not None:
        return _bench_to_metric(args)
    cases = cases_for(args.spec or list(SUITES), args.quick)
    names = name_list(args.backends, "--backends") or backends.available()
    for name in names:
        backends.get(name, "--backends")
    dtypes = check_dtypes("float32" if args.dtype is None else args.dtype, "--dtype")
    devices = _devices(args.devices)
    check_count(args.repeats, "--repeats")
    if args.runs != 5:
        raise SpecError("--runs: goes with --to-metric")
    modes = name_list(args.modes, "--modes")
    known = {"tutorial", *(mode for name in names for mode in backends.get(name).modes)}
    for mode in modes:
        if mode not in known:
            raise BackendError(f"--modes: no chosen backend has mode '{mode}'; modes: {', '.join(sorted(known))}")

    _check_outputs(args, {text: "a spec file this command benchmarks" for text in args.spec if os.path.isfile(text)},
                   json="--json")
    to_stdout = args.json == STDOUT

    def save(result):
        if args.json and not to_stdout:  # a file is rewritten after every case, so a long run keeps its rows
            write_text_atomic(Path(args.json), json_text(result.to_json()))

    result = run_bench(cases, names, devices, dtypes, modes=modes or None, quick=args.quick,
                       repeats=args.repeats, min_repeat_seconds=0.05 if args.quick else 0.2,
                       say=_stderr, after_case=save, isolate=not args.in_process, executor=args.executor,
                       dask_workers=args.dask_workers)
    print(bench_table(result), file=sys.stderr if to_stdout else sys.stdout)  # standard output may be the JSON's
    if args.json:
        write_text_output(args.json, json_text(result.to_json()))
        if not to_stdout:
            print(f"results written to {args.json} (rewritten after every case)")
    return EXIT_OK


def _bench_to_metric(args) -> int:
    """crossnn bench --to-metric METRIC=VALUE SPEC: time to a held-out metric (crossnn.bench.to_metric)."""
    from crossnn import backends
    from crossnn.bench.suites import SUITES
    from crossnn.bench.to_metric import parse_target, time_to_metric, to_metric_table
    from crossnn.files import STDOUT, json_text, write_text_output
    from crossnn.validate import check_count, check_dtypes, name_list

    if len(args.spec) != 1 or args.spec[0] in SUITES:
        raise SpecError("--to-metric: name one spec file or example (not a suite), e.g. "
                        "crossnn bench --to-metric accuracy=0.97 digits")
    if args.executor != "local":
        raise SpecError("--to-metric: runs on the local executor (each backend in a process of its own)")
    for option, value, default in (("--quick", args.quick, False), ("--repeats", args.repeats, 5)):
        if value != default:
            raise SpecError(f"{option}: does not go with --to-metric (use --runs for the number of data orders)")
    check_count(args.runs, "--runs")
    experiment = load_spec(args.spec[0])
    target = parse_target(args.to_metric, experiment)
    names = name_list(args.backends, "--backends") or backends.available()
    for name in names:
        backends.get(name, "--backends")
    dtypes = check_dtypes("float64" if args.dtype is None else args.dtype, "--dtype")
    devices = _devices(args.devices)
    if len(devices) != 1:
        raise SpecError("--devices: --to-metric times one device at a time")
    _check_outputs(args, _spec_inputs([experiment]), json="--json")
    load_data(experiment, args.spec[0])  # a data error is bad input, named before any backend starts
    result = time_to_metric(experiment, target, names, dtypes, modes=name_list(args.modes, "--modes") or None,
                            runs=args.runs,
                            device=devices[0], say=_stderr, isolate=not args.in_process)
    print(to_metric_table(result), file=sys.stderr if args.json == STDOUT else sys.stdout)
    if args.json:
        write_text_output(args.json, json_text(result.to_json()))
    return EXIT_OK if result.passed else EXIT_PARITY_FAILED


def _read_json(path: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SpecError(f"{what}: cannot read {path}: {err}") from None
    except RecursionError:
        raise SpecError(f"{what}: cannot read {path}: arrays or objects nested too deeply") from None


def _is_run_document(doc) -> bool:
    """Has the parts of a `crossnn run --json` document a report reads."""
    return (isinstance(doc, dict) and isinstance(doc.get("experiment"), dict)
            and isinstance(doc["experiment"].get("name"), str) and isinstance(doc.get("runs"), list)
            and all(k in doc for k in ("steps", "snapshot_every", "reference"))
            and all(isinstance(r, dict) and {"label", "backend", "losses", "reference"} <= set(r) for r in doc["runs"]))


def _is_pytest_benchmark(doc) -> bool:
    benchmarks = doc.get("benchmarks") if isinstance(doc, dict) else None
    return bool(benchmarks) and isinstance(benchmarks, list) and all(
        isinstance(b, dict) and isinstance(b.get("name"), str) and isinstance(b.get("stats"), dict)
        and all(isinstance(b["stats"].get(k), (int, float)) for k in ("median", "iqr", "rounds")) for b in benchmarks)


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
    from crossnn.bench.machine import describe
    from crossnn.bench.runner import run_bench
    from crossnn.bench.suites import cases_for
    from crossnn.console import Progress
    from crossnn.harness import RunSpec, train
    from crossnn.parity import compare
    from crossnn.files import check_output_path
    from crossnn.report import ReportInputs, check_report_folder, write_report
    from crossnn.results import result_json
    from crossnn.validate import check_dtypes, name_list

    _refuse_empty(args, bench="--bench", pytest_benchmark="--pytest-benchmark", run_json="--run-json")
    if args.no_bench and args.bench:
        raise SpecError("--no-bench: leaves the benchmarks out; --bench puts a file's benchmarks in: choose one")
    dtypes = check_dtypes(args.dtype, "--dtype")
    suites = name_list(args.suites, "--suites")
    check_output_path(args.out, "--out", directory=True)
    if args.differences and args.name != "latest":
        raise SpecError("--name: --differences always writes <--out>/differences")
    check_report_folder(Path(args.out), "differences" if args.differences else args.name)
    if args.differences:
        from crossnn.report.differences import write_differences_report

        target = write_differences_report(Path(args.out))
        print(f"differences report written to {target}/README.md")
        return EXIT_OK
    default_specs = [] if args.run_json else ["circle"]
    experiments = [load_spec(text) for name in (args.spec or default_specs) for text in _expand_suite(name)]
    bench = _read_json(args.bench, "--bench") if args.bench else None
    pytest_benchmark = _read_json(args.pytest_benchmark, "--pytest-benchmark") if args.pytest_benchmark else None
    if pytest_benchmark is not None and not _is_pytest_benchmark(pytest_benchmark):
        raise SpecError(f"--pytest-benchmark: {args.pytest_benchmark} is not a pytest-benchmark --benchmark-json file "
                        "(a list of benchmarks, each with median, iqr and rounds)")
    if bench is not None and not (isinstance(bench, dict) and bench.get("kind") == "crossnn-bench"):
        raise SpecError(f"--bench: {args.bench} is not a `crossnn bench --json` file")
    runs = []
    for path in args.run_json:
        doc = _read_json(path, "--run-json")
        documents = doc.get("experiments", [doc]) if isinstance(doc, dict) else [doc]  # one experiment or several
        if not (isinstance(documents, list) and all(_is_run_document(d) for d in documents)):
            raise SpecError(f"--run-json: {path} is not a `crossnn run --json` file")
        runs += documents
    cases = cases_for(suites, args.quick) if bench is None and not args.no_bench else []
    devices = _devices(args.devices) if cases else []
    names = _chosen_backends(args.backends) if experiments or cases else []
    command = "crossnn report " + _without_note(sys.argv[2:]) if sys.argv[1:2] == ["report"] else "crossnn report"

    machine = describe() if experiments else None
    for experiment in experiments:
        _stderr(f"parity run: {experiment.name}")
        specs = [RunSpec(name, dtype) for dtype in dtypes for name in names]
        result = train(experiment, specs, progress=Progress())
        parities = {id(r): compare(result.reference, r) for r in result.records}
        runs.append(result_json(result, parities, machine))
    if cases:
        _stderr(f"benchmark: {len(cases)} case(s)")
        bench = run_bench(cases, names, devices, ["float32"], quick=args.quick,
                          min_repeat_seconds=0.05 if args.quick else 0.2, say=_stderr).to_json()
    target = write_report(ReportInputs(args.name, command, runs, bench, pytest_benchmark, note=args.note),
                          Path(args.out))
    print(f"report written to {target}/README.md")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
