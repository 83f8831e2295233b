"""Parity: how far each run's parameters are from the NumPy float64 reference, step by step.

For a parameter with reference value r and run value a at one snapshot:
    abs = max |a - r|,   scale = max |r|,   rel = abs / scale   (∞-norms over the tensor)
and the snapshot is within tolerance when abs <= atol + rtol · scale. The verdict for a run fails at
the first snapshot where any parameter leaves tolerance, or when the run did not finish.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossnn.harness import RunRecord
from crossnn.validate import check_tolerance


@dataclass(frozen=True)
class Tolerance:
    """A snapshot passes when max|a - r| <= atol + rtol · max|r|; both finite and >= 0 (a NaN bound
    would pass everything)."""

    rtol: float
    atol: float

    def __post_init__(self):
        for name in ("rtol", "atol"):
            object.__setattr__(self, name, check_tolerance(getattr(self, name), name, required=True))

    def exceeded(self, diff: float, scale: float) -> bool:
        """max|a - r| = diff is out of bounds for a reference whose max|r| = scale."""
        return diff > self.atol + self.rtol * scale


def difference(a: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """(max|a - r|, max|r|): a snapshot's verdict and its relative difference are made of these."""
    if not r.size:
        return 0.0, 0.0
    return float(np.max(np.abs(a - r))), float(np.max(np.abs(r)))


#: float64 runs must agree to rounding. float32 runs drift by design (see the divergence plot): on the
#: examples the NumPy float32 run itself, the reference's own code, ends 0.9e-4 (digits, 1290 Adam steps)
#: and 2.3e-5 (circle, 12,000 SGD steps) from float64, so the float32 bound sits ten times above that.
TOLERANCES = {"float64": Tolerance(rtol=1e-9, atol=1e-12), "float32": Tolerance(rtol=1e-3, atol=1e-6)}
#: GPU kernels reorder sums (and must run with TF32 off); their bounds are wider.
GPU_TOLERANCES = {"float64": Tolerance(rtol=1e-7, atol=1e-10), "float32": Tolerance(rtol=1e-2, atol=1e-4)}


def tolerance_for(dtype: str, device: str) -> Tolerance:
    return (TOLERANCES if device == "cpu" else GPU_TOLERANCES)[dtype]


@dataclass
class ParamParity:
    name: str
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst_step: int = 0
    first_fail_step: int | None = None


@dataclass(repr=False)
class Parity:
    """One run against the reference. curve: (step, largest rel over all parameters) per snapshot."""

    label: str
    tolerance: Tolerance
    params: list[ParamParity]
    loss_max_abs: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    complete: bool = True
    note: str = ""

    @property
    def first_fail_step(self) -> int | None:
        fails = [p.first_fail_step for p in self.params if p.first_fail_step is not None]
        return min(fails) if fails else None

    @property
    def passed(self) -> bool:
        return self.complete and self.first_fail_step is None

    @property
    def max_rel(self) -> float:
        return max((p.max_rel for p in self.params), default=0.0)

    @property
    def max_abs(self) -> float:
        return max((p.max_abs for p in self.params), default=0.0)

    def __repr__(self) -> str:
        verdict = "pass" if self.passed else ("did not finish" if not self.complete else
                                              f"FAIL from step {self.first_fail_step}")
        return (f"<Parity {self.label}: {verdict}, max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g}, "
                f"rtol {self.tolerance.rtol:g}, atol {self.tolerance.atol:g}>")

    def to_json(self) -> dict:
        return {
            "run": self.label, "passed": self.passed, "complete": self.complete, "note": self.note,
            "rtol": self.tolerance.rtol, "atol": self.tolerance.atol,
            "first_fail_step": self.first_fail_step, "max_abs": self.max_abs, "max_rel": self.max_rel,
            "loss_max_abs": self.loss_max_abs,
            "params": {p.name: {"max_abs": p.max_abs, "max_rel": p.max_rel, "worst_step": p.worst_step,
                                "first_fail_step": p.first_fail_step} for p in self.params},
            "curve": [[step, rel] for step, rel in self.curve],
        }


def compare(reference: RunRecord, run: RunRecord, tolerance: Tolerance | None = None) -> Parity:
    tol = tolerance or tolerance_for(run.spec.dtype, run.spec.device)
    names = list(reference.snapshots[min(reference.snapshots)]) if reference.snapshots else []  # its first
    params = {name: ParamParity(name) for name in names}
    curve = []
    for step in sorted(set(reference.snapshots) & set(run.snapshots)):
        worst = 0.0
        for name in names:
            diff, scale = difference(run.snapshots[step][name], reference.snapshots[step][name])
            rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
            p = params[name]
            if diff > p.max_abs:
                p.max_abs, p.worst_step = diff, step
            p.max_rel = max(p.max_rel, rel)
            if p.first_fail_step is None and tol.exceeded(diff, scale):
                p.first_fail_step = step
            worst = max(worst, rel)
        curve.append((step, worst))
    ref_losses = reference.losses[run.start_step - reference.start_step:]
    n = min(len(ref_losses), len(run.losses))
    with np.errstate(invalid="ignore"):  # inf - inf where both runs diverged: NaN, reported as such
        loss_diff = float(np.max(np.abs(ref_losses[:n] - run.losses[:n]))) if n else 0.0
    goal = run.end_step if run.end_step is not None else max(reference.snapshots, default=-1)
    complete = run.ok and reference.ok and max(run.snapshots, default=-1) == goal
    note = "" if complete else (run.message or reference.message or "run incomplete")
    return Parity(run.spec.label, tol, list(params.values()), loss_diff, curve, complete, note)
