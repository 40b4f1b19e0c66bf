"""Ray executor: each cell is a Ray task; the driver appends records as tasks finish.

A task runs the cell exactly as the local executor does (``run_isolated``: a spawned child
process with the per-cell timeout), so records, isolation and failure handling are the
same; Ray only decides where and when. A ``finetune`` task takes its ``transfer`` task's
result as an argument, so Ray starts it only once the transfer head is saved. Output and
cache folders must be on storage every node sees.
"""

from __future__ import annotations

from pathlib import Path

from bench.grid import Cell, failed_record
from bench.isolation import run_isolated
from bench.records import Record


def _run_task(cell: Cell, out_dir: Path, cache_dir: Path, timeout_seconds, *dependencies) -> Record:
    return run_isolated(cell, out_dir, cache_dir, timeout_seconds)


class RayExecutor:
    def __init__(self, out_dir: Path, cache_dir: Path, timeout_seconds: float | None, address: str | None = None):
        import ray

        if not ray.is_initialized():
            # No address: a local instance for this run, stopped with the driver. It and a
            # cluster on this machine's loopback are reached on 127.0.0.1, never another address.
            loopback = address is None or address.split(":")[0] in ("127.0.0.1", "localhost")
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **({"_node_ip_address": "127.0.0.1"} if loopback else {}))
        self.ray = ray
        self.out_dir, self.cache_dir, self.timeout_seconds = Path(out_dir).resolve(), Path(cache_dir).resolve(), timeout_seconds
        self.task = ray.remote(_run_task)

    def _submit(self, cell: Cell, *dependencies):
        return self.task.options(num_cpus=cell.cpus, num_gpus=cell.gpus).remote(cell, self.out_dir, self.cache_dir, self.timeout_seconds, *dependencies)

    def _result(self, ref, cell: Cell) -> Record:
        try:
            return self.ray.get(ref)
        except Exception as error:  # a lost node or worker: the cell failed, the sweep goes on
            return failed_record(cell, "exception", f"ray task failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:300] if str(error).strip() else ''}")

    def run(self, cell: Cell) -> Record:
        return self._result(self._submit(cell), cell)

    def map(self, cells: list[Cell], on_start=None):
        """Submit every cell, then yield ``(cell, record)`` in completion order."""
        pending, transfers = {}, {}
        for cell in cells:
            dependencies = [transfers[cell.head_artifact(self.out_dir)]] if cell.stage == "finetune" and cell.head_artifact(self.out_dir) in transfers else []
            ref = self._submit(cell, *dependencies)
            if cell.stage == "transfer":
                transfers[cell.head_artifact(self.out_dir)] = ref
            pending[ref] = cell
        while pending:
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            cell = pending.pop(ready[0])
            yield cell, self._result(ready[0], cell)
