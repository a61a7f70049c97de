"""Scale-out on Ray: the same job, its heavy steps on Ray actors, one model copy per actor.

The driver (the `semla-relabel` process) keeps the job folder: it claims the job, clusters, writes
every result as it arrives (so an interrupted Ray run resumes like a local one), writes the outputs
and the report, and runs the comparison if asked for. Each actor (`RelabelActor`, `cpus_per_worker`
CPUs) builds the engine once from the job's EngineSpec and runs the units of work.py: one embedding
task per recording, one segmentation task per (cluster, recording, up to `batches_per_task`
batches). Ray schedules them (`ray.util.ActorPool`); results come back through its object store.
Batches are the same fixed index ranges as in a local run, so the masks are the same.

    semla-relabel a.mcap b.mcap --out OUT --demo --ray                    # a local Ray instance
    semla-relabel a.mcap b.mcap --out OUT ... --ray ray://head:10001       # an existing cluster

On a cluster every node must read the recordings, model and library at the same paths (a shared
filesystem) and have semla_ros's dependencies (torch, open_clip, rosbags, ...) installed. When this
process starts the Ray connection, the semla_ros code travels with the job (`runtime_env` py_modules);
when Ray is already initialised (a notebook, a test), the actors find this process's semla_ros through
PYTHONPATH, which only reaches a local instance: for a remote cluster initialise Ray with
`runtime_env={"py_modules": [<semla_ros folder>]}` or install semla_ros on the nodes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

from .job import LocalWorkers, SegmentResult, SegmentTask
from .work import EmbeddedBatch


class RelabelActor:
    """One model copy: the engine built from `spec`, running the job's units."""

    def __init__(self, spec, threads: int):
        import torch

        from ..engine import build_engine

        torch.set_num_threads(max(1, int(threads)))
        self.workers = LocalWorkers(build_engine(spec).raise_for_errors())

    def describe(self) -> dict:
        import os

        import torch

        return {"pid": os.getpid(), "threads": torch.get_num_threads(), "navigator": self.workers.build.navigator.id}

    def embed(self, recording, done, batch_size: int) -> list[EmbeddedBatch]:
        return list(self.workers.embed([(recording, done)], batch_size))

    def segment(self, task: SegmentTask) -> list[SegmentResult]:
        return list(self.workers.segment([task]))


def _package_dir() -> str:
    import semla_ros

    return str(Path(semla_ros.__file__).resolve().parent)


class RayWorkers:
    """The `workers` of a RelabelJob on Ray. Connects to `address` (None: the running instance, or a new
    local one); `workers` actors (default: as many as the cluster's CPUs allow)."""

    def __init__(self, spec, address: str | None = None, workers: int | None = None, cpus_per_worker: int = 1,
                 batches_per_task: int = 8):
        import ray
        from ray.util import ActorPool

        if cpus_per_worker < 1 or batches_per_task < 1 or (workers is not None and workers < 1):
            raise ValueError("workers, cpus_per_worker and batches_per_task must be >= 1")
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"py_modules": [_package_dir()]})
            runtime_env = {}
        else:
            runtime_env = {"env_vars": {"PYTHONPATH": str(Path(_package_dir()).parent)}}
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < cpus_per_worker:
            raise RuntimeError(f"the Ray cluster has {cpus} CPUs, a worker needs {cpus_per_worker}")
        count = workers or max(1, cpus // cpus_per_worker)
        actor = ray.remote(RelabelActor).options(num_cpus=cpus_per_worker, runtime_env=runtime_env)
        self.actors = [actor.remote(spec, cpus_per_worker) for _ in range(count)]
        self.pool = ActorPool(self.actors)
        self.batches_per_task = batches_per_task

    def embed(self, jobs, batch_size: int) -> Iterator[EmbeddedBatch]:
        for batches in self.pool.map_unordered(lambda a, job: a.embed.remote(job[0], job[1], batch_size), jobs):
            yield from batches

    def segment(self, tasks) -> Iterator[SegmentResult]:
        n = self.batches_per_task
        parts = [dataclasses.replace(t, batches=t.batches[s:s + n]) for t in tasks for s in range(0, len(t.batches), n)]
        for results in self.pool.map_unordered(lambda a, task: a.segment.remote(task), parts):
            yield from results

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._started:
            ray.shutdown()
