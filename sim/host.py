"""The host layer: what the host does to run ranking work on the accelerator, in one place.

Everything here is hardware-independent Python over :mod:`rpaccel.sim.mlp_program` (the
engine's memory images and commands) and the golden model; it talks to the hardware only
through a :class:`CoreTransport`:

* **allocation** (:func:`allocate_models`): the models a partition runs, packed one after
  another into its engine's weight and bias memories;
* **sub-batch splitting** (:func:`sub_batches`): a stage's candidates in sub-batches of at
  most ``sub_batch`` rows;
* **partition mapping**: :func:`deal` deals jobs (sub-batches) round robin over the
  partitions, :func:`split_columns` splits one layer's output columns over them;
* **the cascade** (:func:`run_cascade`): every stage of a query, its MLPs and its top-k run
  through the transport and checked against the golden bit for bit; the next stage scores
  exactly the candidates the previous one kept.

Transports: :class:`GoldenTransport` (this module: the golden integer functions, no
hardware), the cocotb transport of the RTL (``rpaccel.gen.transport.CocotbTransport``:
``tb/mlp_jobs.py`` on the compute core and ``tb/bench_topk.py`` on the top-k unit) and the
Amaranth-simulator transport (``rpaccel.tb.amaranth_transport.AmaranthTransport``), so the
same host code drives every backend and their results compare directly. The accelerator's
top level will add a transport over its CSRs and memory queue.

Until the embedding subsystem is part of the flow, the pooled embeddings and the feature
interaction of a stage come from the golden's integer trace; the MLPs and the top-k are the
hardware's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from rpaccel.hw.errors import RpaccelError
from rpaccel.hw.geometry import EngineGeometry

from . import numerics
from .mlp_program import IntLayer, MLPProgram, model_mlps, reference_mlp

__all__ = ["HostError", "MLPJob", "JobResult", "TopKQuery", "TopKResult", "CoreTransport",
           "GoldenTransport", "allocate_models", "sub_batches", "deal", "split_columns",
           "stage_jobs", "run_cascade", "CascadeMismatch"]


class HostError(RpaccelError, ValueError):
    """Work the host cannot map onto the hardware (too large, unknown model, ...)."""


class CascadeMismatch(RpaccelError):
    """A backend computed something other than the golden model; the message says where."""


@dataclass(frozen=True)
class MLPJob:
    """One sub-batch through one MLP: ``x`` (B, n_in) int8 rows, ``B <= sub_batch``;
    ``expected`` (optional) the golden output, checked by the backend bit for bit."""

    model: str
    x: np.ndarray
    expected: np.ndarray | None = None


@dataclass(frozen=True)
class JobResult:
    """The MLP's output (int32 scores of a score MLP, else the last layer's int8 rows) and
    the engine's cycle count of every layer (empty where the backend has no cycles)."""

    out: np.ndarray
    layer_cycles: tuple = ()


@dataclass(frozen=True)
class TopKQuery:
    """The scores of one stage in candidate order; ids are positions ``0..N-1``."""

    scores: np.ndarray
    k: int


@dataclass(frozen=True)
class TopKResult:
    """Kept positions and their scores, best first, and the unit's cycles (or ``None``)."""

    positions: np.ndarray
    scores: np.ndarray
    cycles: int | None = None


class CoreTransport(Protocol):
    """How the host reaches a backend. Both calls run a whole batch of work: each one is a
    simulator run (or a queue submission) of its own, so batching keeps the count low."""

    name: str

    def run_mlp_jobs(self, models: dict[str, list[IntLayer]],
                     jobs: list[MLPJob]) -> list[JobResult]: ...

    def run_topk(self, queries: list[TopKQuery]) -> list[TopKResult]: ...


class GoldenTransport:
    """The golden model as a backend: integer MLPs and top-k from :mod:`numerics`."""

    name = "golden"

    def run_mlp_jobs(self, models, jobs):
        results = []
        for job in jobs:
            if job.model not in models:
                raise HostError(f"job names unknown model {job.model!r}")
            results.append(JobResult(np.asarray(reference_mlp(job.x, models[job.model]))))
        return results

    def run_topk(self, queries):
        results = []
        for q in queries:
            order = numerics.topk(q.scores, np.arange(len(q.scores)), q.k)
            results.append(TopKResult(order, np.asarray(q.scores)[order]))
        return results


def allocate_models(models: dict[str, list[IntLayer]],
                    geo: EngineGeometry) -> dict[str, MLPProgram]:
    """Place every model's layers one after another in one engine's weight and bias
    memories (in the order given); raises :class:`HostError` when they do not fit."""
    programs, tile, bias = {}, 0, 0
    for name, layers in models.items():
        try:
            program = MLPProgram(geo, layers, weight_base=tile, bias_base=bias)
        except ValueError as err:
            raise HostError(f"model {name!r} does not fit the engine after "
                            f"{', '.join(programs) or 'nothing'}: {err}") from None
        programs[name] = program
        tile += len(program.weight_words) // geo.rows
        bias += len(program.bias_words)
    return programs


def sub_batches(n: int, sub_batch: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``n`` rows in sub-batches of at most ``sub_batch``."""
    if n < 1 or sub_batch < 1:
        raise HostError(f"cannot split {n} rows into sub-batches of {sub_batch}")
    return [(lo, min(n, lo + sub_batch)) for lo in range(0, n, sub_batch)]


def deal(n_jobs: int, partitions: int) -> list[list[int]]:
    """Job numbers of each partition: dealt round robin, so partitions run concurrently."""
    return [list(range(p, n_jobs, partitions)) for p in range(partitions)]


def split_columns(n_out: int, partitions: int) -> list[tuple[int, int]]:
    """One layer's output columns split as evenly as possible over the partitions: a
    ``[lo, hi)`` slice per partition (empty slices at the end when ``n_out`` is small)."""
    per = -(-n_out // partitions)
    return [(p * per, min(n_out, (p + 1) * per)) for p in range(partitions)]


def stage_jobs(trace, sub_batch: int) -> list[MLPJob]:
    """The MLP jobs of one stage from the golden integer trace of its candidates: for each
    sub-batch its bottom MLP (dense -> bottom output) and its top MLP (top input -> score),
    each with the golden result as ``expected``."""
    jobs = []
    for lo, hi in sub_batches(len(trace.scores), sub_batch):
        jobs.append(MLPJob("bottom", trace.dense[lo:hi], trace.bottom[-1][lo:hi]))
        jobs.append(MLPJob("top", trace.top_input[lo:hi], trace.scores[lo:hi]))
    return jobs


def _require(ok: bool, what: str):
    if not ok:
        raise CascadeMismatch(what)


@dataclass
class CascadeFigures:
    user: int
    candidates: int
    backend: str
    stages: list = field(default_factory=list)
    ranking: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"user": self.user, "candidates": self.candidates, "backend": self.backend,
                "stages": self.stages, "top": self.ranking}


def run_cascade(golden, stages, user: int, candidates, transport: CoreTransport, *,
                sub_batch: int, progress=None) -> CascadeFigures:
    """Run one query's cascade on ``transport``; every stage's scores and kept list must
    equal the golden's (:class:`CascadeMismatch` otherwise). ``stages`` is a list of
    ``(model, keep_k)``. Candidates go to the hardware in ascending id order, so that the
    top-k unit's tie-break on positions is the golden's tie-break on ids."""
    from .golden import Pipeline, Stage
    from .quant import forward_int

    say = progress or (lambda msg: None)
    pipeline = Pipeline("host", tuple(Stage(m, k) for m, k in stages))
    reference = golden.run(pipeline, user, candidates, "int8")
    figures = CascadeFigures(int(user), int(np.asarray(candidates).size), transport.name)
    cands = np.asarray(candidates)
    for n, ((model, keep), ref) in enumerate(zip(stages, reference.stages), start=1):
        cands = np.sort(cands)
        trace = forward_int(golden.quantized[model], golden.batch(user, cands), trace=True)
        jobs = stage_jobs(trace, sub_batch)
        say(f"stage {n}: {model} model on {cands.size} candidates ({len(jobs)} sub-batch MLP "
            f"jobs) on {transport.name}")
        results = transport.run_mlp_jobs(model_mlps(golden.quantized[model]), jobs)
        for job, res in zip(jobs, results):
            _require(job.expected is None or np.array_equal(res.out, job.expected),
                     f"stage {n}: {transport.name} {job.model} MLP output differs from the "
                     f"golden's")
        scores = np.concatenate([r.out for j, r in zip(jobs, results) if j.model == "top"])
        order = np.argsort(ref.candidates)
        _require(np.array_equal(cands, ref.candidates[order]),
                 f"stage {n}: candidate lists of the golden and the backend differ")
        _require(np.array_equal(scores, ref.scores[order]),
                 f"stage {n}: {transport.name} scores differ from the golden's")
        say(f"stage {n}: top-{keep} of {cands.size} scores on {transport.name}")
        top = transport.run_topk([TopKQuery(scores, keep)])[0]
        kept = cands[top.positions]
        _require(np.array_equal(kept, ref.kept),
                 f"stage {n}: the {transport.name} top-{keep} differs from the golden's")
        figures.stages.append({
            "model": model, "keep_k": keep, "candidates": int(cands.size),
            "mlp_engine_cycles": int(sum(sum(r.layer_cycles) for r in results)),
            "topk_cycles": top.cycles, "kept_match_golden": True})
        cands = kept
    figures.ranking = [int(i) for i in cands]
    return figures
