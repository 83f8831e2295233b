"""`crossnn bench --executor dask`: a Dask LocalCluster of 2 workers on this machine gives the same rows as
the local executor, each naming its worker; a worker killed mid-run costs only its own job, which is
retried once and otherwise reported as failure rows, never silently missing."""

from __future__ import annotations

import json
import os
import re
import signal
import threading

import pytest

pytest.importorskip("distributed")

from crossnn.bench.runner import offers, parse_executor, run_bench  # noqa: E402
from crossnn.bench.select import select  # noqa: E402
from crossnn.bench.suites import cases_for  # noqa: E402
from crossnn.cli import main  # noqa: E402
from crossnn.errors import BackendError  # noqa: E402


def _keys(rows):
    return sorted((r["suite"], r["case"], r["backend"], r["device"], r["mode"], r["dtype"]) for r in rows)


def test_executor_option_is_checked():
    assert parse_executor("local") == ("local", None) and parse_executor("dask") == ("dask", None)
    assert parse_executor("dask=tcp://10.0.0.5:8786") == ("dask", "tcp://10.0.0.5:8786")
    for bad in ("dask=", "local=x", "ray", ""):
        with pytest.raises(BackendError, match="--executor: use local, dask, dask=ADDRESS"):
            parse_executor(bad)


@pytest.mark.parametrize("argv, message", [
    (["--executor", "spark"], "--executor: use local, dask, dask=ADDRESS"),
    (["--dask-workers", "2"], "--dask-workers: goes with --executor dask (no address)"),
    (["--executor", "dask", "--dask-workers", "0"], "--dask-workers: must be an integer >= 1, got 0"),
    (["--executor", "dask", "--dask-workers", "64"], "--dask-workers: must be in 1..")])
def test_bad_executor_options_are_one_line_exit_2(argv, message, capsys):
    assert main(["bench", "linear-2x3", "--backends", "numpy", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_local_cluster_of_two_workers_gives_the_rows_of_the_local_executor_each_naming_its_worker():
    cases = cases_for(["linear-2x3"], quick=True)
    options = dict(quick=True, min_repeat_seconds=0.02, peak_matrix=256, say=lambda line: None)
    local = run_bench(cases, ["numpy", "torch"], ["cpu", "cuda"], ["float32"], **options)
    dask = run_bench(cases, ["numpy", "torch"], ["cpu", "cuda"], ["float32"], executor="dask", dask_workers=2,
                     **options).to_json()
    local = local.to_json()
    assert _keys(dask["rows"]) == _keys(local["rows"]) and len(dask["rows"]) >= 5
    assert dask["failures"] == local["failures"] == []
    assert dask["settings"]["executor"]["kind"] == "dask" and len(dask["settings"]["executor"]["workers"]) == 2
    for row in dask["rows"]:
        assert re.fullmatch(r"[01]@.+", row["worker"]) and row["attempt"] == 1
        assert row["cpus"] == 1  # each worker pinned to its own one of the two cores
        assert row["machine"] in dask["machines"] and row["calibration_seconds"]
    assert all(row["worker"] == "local" for row in local["rows"])
    # no worker has a GPU resource: the GPU cases are skipped with the reason, never run on a CPU
    gpu = [s for s in dask["skipped"] if s["device"] == "cuda"]
    assert {s["backend"] for s in gpu} == {"numpy", "torch"}
    assert all("no Dask worker has a GPU resource" in s["reason"] for s in gpu)


def test_bench_executor_dask_on_the_command_line_names_the_worker_of_every_row(tmp_path, capsys):
    out = tmp_path / "dask.json"
    assert main(["bench", "linear-2x3", "--backends", "numpy", "--quick", "--executor", "dask", "--json",
                 str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {r["mode"] for r in doc["rows"]} == {"tutorial", "default"}
    assert all(re.fullmatch(r"0@.+", r["worker"]) for r in doc["rows"])
    captured = capsys.readouterr()
    assert "[1/1] numpy cpu spec/linear-2x3: 2 row(s), 0 failure(s) on 0@" in captured.err  # streamed progress


def test_a_killed_worker_costs_its_job_one_retry_and_a_job_lost_twice_becomes_failure_rows():
    from crossnn.bench.dask_executor import local_cluster

    cases = cases_for(["linear-2x3", "circle"], quick=True)
    modes = ["tutorial", *(t.mode for t in select(offers(["numpy"]), ["cpu"], quick=True)[0])]
    expected = sorted((c.suite, c.label, "numpy", "cpu", mode, "float32") for c in cases for mode in modes)

    def covered(result):
        """Row keys, plus every mode of the cases a failure row stands for: nothing may be missing."""
        return sorted(_keys(map(vars, result.rows)) + [(f.suite, f.case, f.backend, f.device, mode, f.dtype)
                                                       for f in result.failures for mode in modes])

    with local_cluster(2) as client:
        kills = []

        def kill(name: str) -> None:  # a worker process by its name (a restarted worker keeps its name)
            address = next(a for a, w in client.scheduler_info()["workers"].items() if str(w["name"]) == name)
            os.kill(client.run(os.getpid, workers=[address])[address], signal.SIGKILL)

        def killer(times: int):
            def say(line: str) -> None:  # runs in the client's event loop: kill from a thread of its own
                found = re.match(r"  \[(\d+)@[^]]+\] \[1/1\] spec circle", line)
                if found and len(kills) < times:
                    kills.append(threading.Thread(target=kill, args=(found[1],)))
                    kills[-1].start()
            return say

        once = run_bench(cases, ["numpy"], ["cpu"], ["float32"], quick=True, min_repeat_seconds=0.02,
                         say=killer(1), executor=client, peak_matrix=256)
        assert len(kills) == 1 and once.failures == []
        assert covered(once) == expected  # nothing missing
        assert {r.attempt for r in once.rows if r.case == "circle"} == {2}  # retried once, on a live worker

        kills.clear()
        twice = run_bench(cases, ["numpy"], ["cpu"], ["float32"], quick=True, min_repeat_seconds=0.02,
                          say=killer(2), executor=client, peak_matrix=256)
        assert len(kills) == 2 and covered(twice) == expected
        lost = [f for f in twice.failures if f.case == "circle"]
        assert [(f.backend, f.dtype, f.attempt) for f in lost] == [("numpy", "float32", 2)]
        assert "lost twice; last: KilledWorker" in lost[0].reason
        assert not [r for r in twice.rows if r.case == "circle"]
