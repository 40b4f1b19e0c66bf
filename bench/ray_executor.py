"""Ray executor: each cell is a Ray task; the driver appends records as tasks finish.

A task runs the cell exactly as the local executor does (``run_isolated``: a spawned child
process with the per-cell timeout), so records, isolation and failure handling are the
same; Ray only decides where and when. Each task puts its cell's progress events on a Ray
queue (an actor, so it works across nodes) that the driver drains between completions; a
cell counts as started when its first event arrives. A ``finetune`` task takes its ``transfer`` task's
result as an argument, so Ray starts it only once the transfer head is saved. Output and
cache folders must be on storage every node sees.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.grid import Cell, RunOptions, failed_record
from bench.isolation import run_isolated
from bench.records import Record


# How often the driver looks at the progress queue while no task finishes.
PROGRESS_POLL_SECONDS = 0.5
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Ray's switch for clusters that span machines. On (Linux's default), Ray takes this node's
# address to be the one it would use to reach the outside and rewrites a loopback address to
# it (ray.init: canonicalize_bootstrap_address -> resolve_ip_for_localhost), so a driver
# given 127.0.0.1:PORT dials <routable address>:PORT. Off, the node's address is 127.0.0.1
# and a head started with it listens on loopback only. Ray reads it once, when imported.
SINGLE_MACHINE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (``HOST:PORT``, or ``None`` for a local instance) stays on this machine's loopback."""
    if address is None:
        return True
    host = address.rsplit(":", 1)[0]  # Ray's addresses are HOST:PORT ([::1]:PORT for IPv6)
    return host.strip("[]") in LOOPBACK_HOSTS


def keep_ray_on_loopback(address: str | None) -> None:
    """Before Ray is imported: for a loopback address (or none), make Ray's node address 127.0.0.1.

    The head must have been started the same way (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray
    start --head --node-ip-address=127.0.0.1``), so that both sides agree on the node's address.
    """
    if is_loopback(address):
        os.environ.update(SINGLE_MACHINE_ENV)


def _run_task(cell: Cell, out_dir: Path, cache_dir: Path, options: RunOptions, progress_queue, *dependencies) -> Record:
    def forward(event):
        try:
            progress_queue.put_nowait((cell.key, event))
        except Exception:  # progress is best effort: a lost queue must not fail the cell
            pass

    return run_isolated(cell, out_dir, cache_dir, options, forward)


class RayExecutor:
    def __init__(self, out_dir: Path, cache_dir: Path, address: str | None = None):
        keep_ray_on_loopback(address)
        import ray

        if not ray.is_initialized():
            # No address: a local instance for this run, stopped with the driver. It and a
            # cluster on this machine's loopback are reached on 127.0.0.1, never another address.
            loopback = is_loopback(address)
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **({"_node_ip_address": "127.0.0.1"} if loopback else {}))
        self.ray = ray
        self.out_dir, self.cache_dir = Path(out_dir).resolve(), Path(cache_dir).resolve()
        self.task = ray.remote(_run_task)
        from ray.util.queue import Queue

        # No CPU reserved: the queue must never wait for a cell's slot.
        self.progress = Queue(actor_options={"num_cpus": 0})

    def _submit(self, cell: Cell, options: RunOptions, *dependencies):
        return self.task.options(num_cpus=options.cpus, num_gpus=options.gpus).remote(cell, self.out_dir, self.cache_dir, options, self.progress, *dependencies)

    def _drain(self, cells: dict, started: set, on_start, on_progress) -> None:
        """Hand queued progress events to ``on_progress(cell, event)``; a first event starts its cell."""
        try:
            count = self.progress.qsize()
            events = self.progress.get_nowait_batch(count) if count else []
        except Exception:  # a lost queue actor costs the view its updates, not the sweep its cells
            return
        for key, event in events:
            if key not in cells:
                continue  # a cell already yielded, or a retry's late event
            if key not in started:
                started.add(key)
                if on_start:
                    on_start(cells[key])
            if on_progress:
                on_progress(cells[key], event)

    def _result(self, ref, cell: Cell) -> Record:
        try:
            return self.ray.get(ref)
        except Exception as error:  # a lost node or worker: the cell failed, the sweep goes on
            return failed_record(cell, "exception", f"ray task failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error).strip() else ''}")

    def run(self, cell: Cell, options: RunOptions, on_progress=None) -> Record:
        ref = self._submit(cell, options)
        while not self.ray.wait([ref], timeout=PROGRESS_POLL_SECONDS)[0]:
            self._drain({cell.key: cell}, {cell.key}, None, on_progress)
        self._drain({cell.key: cell}, {cell.key}, None, on_progress)
        return self._result(ref, cell)

    def map(self, cells: list[Cell], options: RunOptions, on_start=None, on_progress=None):
        """Submit every cell, then yield ``(cell, record)`` in completion order."""
        pending, transfers, started = {}, {}, set()
        for cell in cells:
            dependencies = [transfers[cell.head_artifact(self.out_dir)]] if cell.stage == "finetune" and cell.head_artifact(self.out_dir) in transfers else []
            ref = self._submit(cell, options, *dependencies)
            if cell.stage == "transfer":
                transfers[cell.head_artifact(self.out_dir)] = ref
            pending[ref] = cell
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=PROGRESS_POLL_SECONDS)
            self._drain({c.key: c for c in pending.values()}, started, on_start, on_progress)
            if ready:
                cell = pending.pop(ready[0])
                yield cell, self._result(ready[0], cell)
