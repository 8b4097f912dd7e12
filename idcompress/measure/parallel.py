"""Run independent ``(d, seed)`` evaluations, one worker process per device.

``DevicePool(devices).run(evaluate, points, on_result)`` runs every point and calls ``on_result``
in the parent process as each one finishes (so results can be persisted at once); ``run_points``
is the one-off form. With ``devices`` of length
≥ 2 there is one worker process per entry (``["cuda:0", "cuda:1"]``; ``["cpu", "cpu"]`` runs two
CPU processes); otherwise the points run one after another in this process. The search calls it
with all grid points during the sweep and with the seeds of one ``d`` during bisection, so the
sweep is parallel and the bisection sequential in ``d``.

Workers are started with the ``spawn`` method (safe with CUDA), so a script that uses them needs
the ``if __name__ == "__main__":`` guard, and ``evaluate`` must be picklable:
a module-level function or a ``functools.partial`` of one. If ``evaluate`` accepts a ``device``
keyword argument, the worker's device is passed to it; each worker runs one point at a time.
"""

from __future__ import annotations

import inspect
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

from .search import Point

ResultCallback = Callable[[int, int, float, float], None]
"""``on_result(d, seed, score, wall_time_s)``."""


def accepts_device(fn: Callable) -> bool:
    """True when ``fn`` takes a ``device`` keyword argument (or ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "device" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        or p.kind == p.VAR_KEYWORD
        for p in params
    )


def _timed_call(
    evaluate: Callable, d: int, seed: int, device: str | None
) -> tuple[float, float]:
    start = time.perf_counter()
    if device is not None and accepts_device(evaluate):
        score = evaluate(d, seed, device=device)
    else:
        score = evaluate(d, seed)
    return float(score), time.perf_counter() - start


class DevicePool:
    """Worker processes, one per device, kept alive across batches (a context manager).

    With fewer than two devices no process is started and points run in this process (on
    ``devices[0]`` when given). Reuse one pool for a whole search: starting a process costs
    seconds (it imports torch), and bisection sends small batches.
    """

    def __init__(self, devices: Sequence[str] | None = None) -> None:
        self.devices = list(devices) if devices else []
        self._pools: list[ProcessPoolExecutor] = []
        if len(self.devices) >= 2:
            ctx = multiprocessing.get_context("spawn")
            self._pools = [
                ProcessPoolExecutor(max_workers=1, mp_context=ctx) for _ in self.devices
            ]

    def __enter__(self) -> DevicePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (waits for runs in progress)."""
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
        self._pools = []

    def run(
        self,
        evaluate: Callable[..., float],
        points: Sequence[Point],
        on_result: ResultCallback | None = None,
    ) -> dict[Point, float]:
        """Run ``evaluate(d, seed[, device=...])`` for every point; return ``{(d, seed): score}``.

        ``on_result(d, seed, score, wall_time_s)`` runs in this process as each point finishes.
        An exception in a run is re-raised here once the runs in flight have finished (those
        that succeeded are reported first).
        """
        results: dict[Point, float] = {}

        def report(point: Point, score: float, wall: float) -> None:
            results[point] = score
            if on_result is not None:
                on_result(point[0], point[1], score, wall)

        if not self._pools:
            device = self.devices[0] if self.devices else None
            for d, s in points:
                score, wall = _timed_call(evaluate, d, s, device)
                report((d, s), score, wall)
            return results

        pending = list(reversed(points))
        running: dict[Future, tuple[int, Point]] = {}
        error: BaseException | None = None

        def submit(w: int) -> None:
            point = pending.pop()
            fut = self._pools[w].submit(_timed_call, evaluate, *point, self.devices[w])
            running[fut] = (w, point)

        for w in range(min(len(self._pools), len(pending))):
            submit(w)
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                w, point = running.pop(fut)
                try:
                    score, wall = fut.result()
                except BaseException as e:  # noqa: BLE001 - re-raised below
                    error = error or e
                    continue
                report(point, score, wall)
                if pending and error is None:
                    submit(w)
        if error is not None:
            raise error
        return results


def run_points(
    evaluate: Callable[..., float],
    points: Sequence[Point],
    devices: Sequence[str] | None = None,
    on_result: ResultCallback | None = None,
) -> dict[Point, float]:
    """One-off :meth:`DevicePool.run` with a pool that is closed afterwards."""
    with DevicePool(devices) as pool:
        return pool.run(evaluate, points, on_result)
