"""Peak anonymous memory of this process: a sampler thread reading ``RssAnon`` from /proc.

Kept apart from ``bench.measure`` so a process can measure itself without importing
TensorFlow (``bench perf --memory`` measures its own decoding of the data this way).
"""

from __future__ import annotations

import threading
import time


class AnonMemorySampler:
    """Peak anonymous (non-file-backed) resident memory of this process, sampled by a daemon thread.

    The kernel's high-water mark (``peak_rss_mb``) also counts the pages of memory-mapped files
    the cache reads, which the kernel can drop at any time; ``RssAnon`` is what the process
    itself allocated (heap, tensors, copies). No kernel counter keeps its peak, so it is read
    from ``/proc/self/status`` every ``interval_seconds`` (a read costs microseconds): a spike
    shorter than that can be missed, but an allocation large enough to matter takes longer
    than that to fill.
    """

    def __init__(self, interval_seconds: float = 0.05):
        self.interval_seconds = interval_seconds
        self.peak_kb = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="anon-memory-sampler", daemon=True)
        self._thread.start()

    @staticmethod
    def current_kb() -> int | None:
        try:
            with open("/proc/self/status", "rb") as status:
                for line in status:
                    if line.startswith(b"RssAnon:"):
                        return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def sample(self) -> None:
        now = self.current_kb()
        if now is not None:
            with self._lock:
                self.peak_kb = max(self.peak_kb, now)

    def _run(self) -> None:
        while True:
            self.sample()
            time.sleep(self.interval_seconds)

    def reset(self) -> None:
        """Start a new peak from the memory held now."""
        with self._lock:
            self.peak_kb = 0
        self.sample()

    def peak_mb(self) -> float | None:
        self.sample()
        return self.peak_kb / 1024 if self.peak_kb else None


_ANON_SAMPLER: AnonMemorySampler | None = None


def start_anon_peak() -> None:
    """Begin measuring ``peak_anon_mb`` from now (one sampler thread per process, started on first use)."""
    global _ANON_SAMPLER
    if _ANON_SAMPLER is None:
        _ANON_SAMPLER = AnonMemorySampler()
    _ANON_SAMPLER.reset()


def peak_anon_mb() -> float | None:
    """Peak anonymous resident memory since ``start_anon_peak`` (MB), or ``None`` where /proc has no ``RssAnon``."""
    return _ANON_SAMPLER.peak_mb() if _ANON_SAMPLER is not None else None


def peak_rss_mb() -> float:
    """High-water resident memory of this process (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
