"""Benchmarks on a Dask distributed cluster: `crossnn bench --executor dask[=ADDRESS]`.

Imported only when that executor is chosen (dask[distributed] is the optional extra `crossnn[dask]`).

The work is cut into jobs of one backend, one case and one requested device (cpu, cuda, ...), every
dtype: the unit inside which a framework's modes and its hand-written loop take their repeats in turn,
with the matmul peak and the calibration kernel (crossnn.bench.runner), so the ratios stay fair
wherever a job runs. A worker runs each job in a fresh Python process of its own, as the local
executor does, because frameworks loaded side by side slow each other down (crossnn.bench.isolate);
a job whose device is a GPU goes only to a worker started with a `GPU` resource. Every row names its
worker and records that machine's description (its kind in `Row.machine`, the description in
`BenchResult.machines`).

With no address a LocalCluster starts on this machine: `workers` worker processes (default 1) of one
thread each, each pinned to its own share of this process's CPUs, so that jobs running side by side
do not compete for cores. With an address the jobs go to that scheduler's workers (`dask scheduler`
and `dask worker ADDRESS --nthreads 1 [--resources GPU=1]` on each machine, or dask-jobqueue).

Progress lines stream back as the jobs run (Dask events on the topic TOPIC); results stream back as
jobs finish. A worker that dies loses only its running job: the scheduler gives it up (a LocalCluster
started here allows no silent retries; a scheduler of yours retries as its
`distributed.scheduler.allowed-failures` says), crossnn submits it once more, and a job lost twice
becomes failure rows naming the worker, never silently missing rows.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import uuid
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Sequence

import dask
from distributed import Client, LocalCluster, as_completed, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from crossnn.bench import machine
from crossnn.bench.isolate import in_child, merge
from crossnn.bench.runner import BenchResult, Failure, Progress, run_in_process
from crossnn.bench.select import Skipped, device_kind
from crossnn.bench.suites import Case
from crossnn.errors import BackendError

#: the Dask event topic progress lines travel on
TOPIC = "crossnn-bench"
#: the worker resource a GPU job asks for
GPU_RESOURCE = "GPU"
#: how many times crossnn submits a job (the first try and one retry)
ATTEMPTS = 2
#: the attribute a pinned LocalCluster worker keeps its CPUs in
CPUS_ATTRIBUTE = "crossnn_cpus"


@dataclass(frozen=True)
class Job:
    """One backend's cases on one requested device, every dtype, timed in one fresh process."""

    backend: str
    cases: tuple[Case, ...]
    device: str

    @property
    def needs_gpu(self) -> bool:
        return device_kind(self.device) == "gpu"

    @property
    def label(self) -> str:
        return f"{self.backend} {self.device} {', '.join(f'{c.suite}/{c.label}' for c in self.cases)}"


class PinCpus(WorkerPlugin):
    """Gives LocalCluster worker number i (its name) the i-th of `workers` equal shares of the CPUs
    the cluster's process may use; the job processes it starts are pinned to them."""

    def __init__(self, cpus: Sequence[int], workers: int):
        self.cpus, self.workers = list(cpus), workers

    def setup(self, worker) -> None:
        share = len(self.cpus) // self.workers
        index = int(worker.name) if str(worker.name).isdigit() else 0
        setattr(worker, CPUS_ATTRIBUTE, self.cpus[index * share:(index + 1) * share])


@contextlib.contextmanager
def local_cluster(workers: int = 1) -> Iterator[Client]:
    """A LocalCluster on this machine and a client of it: `workers` processes of one thread, each
    pinned to its share of the CPUs (at least one each); a GPU resource for the one worker when there
    is one worker and this machine has a GPU (several workers would time GPU jobs side by side on it).
    The scheduler allows no silent retries: a job on a worker that dies comes back as KilledWorker,
    and run_on_dask retries it once itself, so the rows say they were retried."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cpus = sorted(cpus)
    if not 1 <= workers <= len(cpus):
        raise BackendError(f"--dask-workers: must be in 1..{len(cpus)} (the CPUs here), got {workers}")
    resources = {GPU_RESOURCE: 1} if workers == 1 and machine.gpus() else None
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               resources=resources, silence_logs=logging.ERROR)
    try:
        with Client(cluster) as client:
            client.register_plugin(PinCpus(cpus, workers), name="crossnn-pin-cpus")
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def connect(executor, workers: int = 1) -> Iterator[Client]:
    """A client for `executor`: a distributed.Client (used as it is), a scheduler address, or None
    (a LocalCluster of `workers` workers)."""
    if isinstance(executor, Client):
        yield executor
    elif executor is None:
        with local_cluster(workers) as client:
            yield client
    else:
        try:
            client = Client(executor, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise BackendError(f"--executor: cannot reach the Dask scheduler at {executor}: {err}") from None
        with client:
            yield client


def run_job(job: Job, dtypes: Sequence[str], options: dict, attempt: int) -> BenchResult:
    """A job's work on a Dask worker: run_in_process for the job in a fresh process (pinned to the
    worker's CPUs when it has some), its progress lines sent as Dask events; every row and failure
    then names the worker and the attempt."""
    worker = get_worker()
    name = f"{worker.name}@{platform.node()}"

    def say(text: str) -> None:
        worker.log_event(TOPIC, {"source": name, "text": text})

    outcome = in_child(run_in_process, (list(job.cases), [job.backend], [job.device], list(dtypes)), options,
                       say, None, cpus=getattr(worker, CPUS_ATTRIBUTE, None))
    result = outcome if isinstance(outcome, BenchResult) else lost(job, dtypes, outcome, name, attempt)
    result.rows = [replace(row, worker=name, attempt=attempt) for row in result.rows]
    result.failures = [replace(f, worker=name, attempt=attempt) for f in result.failures]
    return result


def lost(job: Job, dtypes: Sequence[str], reason: str, worker: str, attempt: int) -> BenchResult:
    """What is left of a job that did not finish: one failure per case and dtype."""
    failures = [Failure(case.suite, case.label, job.backend, job.device, "every mode", dtype, reason, worker, attempt)
                for case in job.cases for dtype in dtypes]
    return BenchResult(machine={}, runtimes={}, peaks={}, peak_sources={}, failures=failures)


def gpu_workers(client: Client) -> list[str]:
    """Names of the workers that have a GPU resource."""
    workers = client.scheduler_info().get("workers", {})
    return [str(w.get("name")) for w in workers.values() if (w.get("resources") or {}).get(GPU_RESOURCE, 0) > 0]


def run_on_dask(cases: Sequence[Case], names: Sequence[str], devices: Sequence[str], dtypes: Sequence[str], *,
                executor=None, workers: int = 1, options: dict, say: Progress,
                after_case: Callable[[BenchResult], None] | None = None) -> BenchResult:
    """Every (backend, case, device) job on the cluster of `executor` (see connect); results merged
    as they arrive (after_case sees the merge so far), failures of lost jobs kept as failure rows."""
    with connect(executor, workers) as client:
        client.subscribe_topic(TOPIC, lambda event: say(f"  [{event[1]['source']}] {event[1]['text']}"))
        try:
            return _run_jobs(client, cases, names, devices, dtypes, options, say, after_case)
        finally:
            client.unsubscribe_topic(TOPIC)


def _run_jobs(client: Client, cases: Sequence[Case], names: Sequence[str], devices: Sequence[str],
              dtypes: Sequence[str], options: dict, say: Progress,
              after_case: Callable[[BenchResult], None] | None) -> BenchResult:
    """Submit every job, gather the results as they finish, retry lost jobs once (see run_on_dask)."""
    info = client.scheduler_info()
    address = info.get("address", "")
    with_gpu = gpu_workers(client)
    say(f"Dask scheduler {address}: {len(info.get('workers', {}))} worker(s)"
        + (f", with a GPU resource: {', '.join(with_gpu)}" if with_gpu else ", none with a GPU resource"))
    jobs, skipped = [], []
    for name in names:
        for device in devices:
            job_list = [Job(name, (case,), device) for case in cases]
            if job_list and job_list[0].needs_gpu and not with_gpu:
                skipped.append(Skipped(name, device, "every mode",
                                       f"no Dask worker has a {GPU_RESOURCE} resource (start one with "
                                       f"`dask worker {address or 'ADDRESS'} --resources {GPU_RESOURCE}=1`)"))
                continue
            jobs += job_list
    parts = [BenchResult(machine=machine.describe(), runtimes={}, peaks={}, peak_sources={}, skipped=skipped)]
    futures = as_completed()
    submitted = {}
    run = uuid.uuid4().hex[:8]  # task keys of an earlier run on the same cluster must not answer for this one

    def submit(job: Job, attempt: int) -> None:
        future = client.submit(run_job, job, list(dtypes), options, attempt, pure=False,
                               resources={GPU_RESOURCE: 1} if job.needs_gpu else None,
                               key=f"crossnn-bench-{run}-{len(submitted)}-{job.backend}-attempt-{attempt}")
        submitted[future.key] = (job, attempt)
        futures.add(future)

    for job in jobs:
        submit(job, 1)
    try:
        _gather(futures, submitted, submit, dtypes, say, after_case, parts, len(jobs))
    finally:  # a result kept on a worker would be recomputed elsewhere when that worker dies later
        if futures.futures:
            client.cancel(list(futures.futures), force=True)
    result = merge(parts)
    result.machine = parts[0].machine
    workers_seen = sorted(str(w.get("name")) for w in info.get("workers", {}).values())
    result.settings = {**result.settings, "isolated": True,
                       "executor": {"kind": "dask", "scheduler": address, "workers": workers_seen}}
    return result


def _gather(futures: as_completed, submitted: dict, submit: Callable, dtypes: Sequence[str], say: Progress,
            after_case: Callable[[BenchResult], None] | None, parts: list[BenchResult], jobs: int) -> None:
    """Read each job's result as it finishes and release it on the cluster at once; a lost job is
    submitted once more, and lost twice it becomes failure rows."""
    done = 0
    for future in futures:
        job, attempt = submitted[future.key]
        try:
            part = future.result()
        except Exception as err:  # the worker died (KilledWorker), or the job could not run there
            reason = f"{type(err).__name__}: {err}"
            if attempt < ATTEMPTS:
                say(f"  {job.label}: lost ({reason}); submitted once more")
                submit(job, attempt + 1)
                continue
            part = lost(job, dtypes, f"lost twice; last: {reason}", "-", attempt)
        finally:
            future.release()
        done += 1
        parts.append(part)
        workers = sorted({r.worker for r in part.rows} | {f.worker for f in part.failures})
        say(f"[{done}/{jobs}] {job.label}: {len(part.rows)} row(s), {len(part.failures)} failure(s) "
            f"on {', '.join(workers) or '-'}" + (f" (attempt {attempt})" if attempt > 1 else ""))
        if after_case:
            after_case(merge(parts))
