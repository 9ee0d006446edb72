"""Orders/s per worker process from 1 to N processes, and memory while draining a backlog.

    python -m bench.scaling                          # 1, 2, 4 processes, 300 orders each
    python -m bench.scaling --processes 1 2 4 8 --orders 500
    python -m bench.scaling --processes 4 --orders 20000 --memory   # the backlog run

Services mode, a fresh ``orion_bench`` database, the same method as
``bench.saga_throughput`` (orders placed through the API while no worker runs,
then drained by ``celery -A worker worker -c N``). For each N it reports
orders/s, orders/s per process (the headline: flat means the work scales), and
the CPU of each process group; with ``--memory`` it also samples the resident
memory of every process group every 5 s during the drain and reports the first
and last tenth's averages (flat means no leak). This machine has 2 cores: past 2
processes, throughput can only rise while steps wait (PostgreSQL, row locks, the
provider's ``PAYMENT_LATENCY_MS``). Writes ``bench/results/scaling.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading

import psutil

from bench import harness
from bench import saga_throughput as saga


class MemorySampler:
    """Resident memory (MiB) per process group, sampled every ``interval`` seconds."""

    def __init__(self, trees: dict[str, int], interval: float = 5.0):
        self.trees, self.interval = trees, interval
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.sample())

    def series(self) -> list[dict[str, float]]:
        """Every sample, MiB per group, with ``t``: seconds since the first."""
        return [
            {"t": i * self.interval, **{g: round(v, 1) for g, v in s.items()}}
            for i, s in enumerate(self.samples)
        ]

    def sample(self) -> dict[str, float]:
        meter = harness.CpuMeter(trees=self.trees)
        tree_pids = meter._tree_pids()
        rss: dict[str, float] = {}
        for proc in psutil.process_iter():
            group = meter._group(proc, tree_pids)
            if group is None:
                continue
            with contextlib.suppress(psutil.Error):
                rss[group] = rss.get(group, 0.0) + proc.memory_info().rss / 2**20
        return rss

    def __enter__(self) -> MemorySampler:
        self.samples.append(self.sample())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.sample())

    def summary(self) -> dict[str, dict[str, float]]:
        """Per group: mean MiB over the first and the last tenth of the samples."""
        tenth = max(1, len(self.samples) // 10)
        groups = sorted({g for s in self.samples for g in s})

        def mean(part, group):
            return sum(s.get(group, 0.0) for s in part) / len(part)

        return {
            g: {"first_mib": mean(self.samples[:tenth], g), "last_mib": mean(self.samples[-tenth:], g)}
            for g in groups
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--lines", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--memory", action="store_true", help="sample every process group's memory")
    parser.add_argument("--out", default="scaling")
    args = parser.parse_args(argv)

    data_dir, env, skus, emails = harness.prepare("scaling", max(args.clients, args.orders // 10))
    runs = []
    for processes in args.processes:
        print(f"{processes} process(es): {args.orders} orders ...", flush=True)
        if args.memory:
            saga.DRAIN_HOOK["enter"] = lambda trees: MemorySampler(trees).__enter__()
        r = saga.run_orion(
            env, args.orders, args.lines, processes, data_dir, skus, emails, args.clients, seed=processes
        )
        sampler = saga.DRAIN_HOOK.pop("sampler", None)
        saga.DRAIN_HOOK.pop("enter", None)
        r.update(processes=processes, orders_per_s_per_process=r["orders_per_s"] / processes)
        if sampler is not None:
            r["memory"] = sampler.summary()
            r["memory_series"] = sampler.series()
        runs.append(r)
        print(
            f"  {r['orders_per_s']:.1f} orders/s, {r['orders_per_s_per_process']:.1f} per process", flush=True
        )
    base = runs[0]["orders_per_s_per_process"]
    for r in runs:
        r["per_process_vs_first"] = r["orders_per_s_per_process"] / base
    result = {
        "orders": args.orders,
        "cpus": os.cpu_count(),
        "runs": runs,
        "command": " ".join(["python -m bench.scaling", *(argv or sys.argv[1:])]),
    }
    rows = [
        {
            "processes": r["processes"],
            "orders/s": r["orders_per_s"],
            "per process": r["orders_per_s_per_process"],
            "vs 1st": r["per_process_vs_first"],
            "worker CPU ms/order": r["cpu_ms_per_order"].get("worker"),
            **(
                {
                    f"{g} MiB first/last": f"{m['first_mib']:.0f}/{m['last_mib']:.0f}"
                    for g, m in r.get("memory", {}).items()
                }
            ),
        }
        for r in runs
    ]
    path = harness.finish(args.out, result, _plot, rows)
    print(f"-> {path}")
    return 0


def _plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    series = runs[-1].get("memory_series")
    if series:  # the backlog run: memory of each process group over the drain
        fig, (ax, mem) = plt.subplots(1, 2, figsize=(12, 4))
        for group in sorted({g for s in series for g in s if g != "t"}):
            mem.plot([s["t"] / 60 for s in series], [s.get(group, 0) for s in series], label=group)
        mem.set_xlabel("minutes into the drain")
        mem.set_ylabel("resident MiB")
        mem.set_title(f"{runs[-1]['processes']} processes")
        mem.legend(fontsize=8)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
    x = [r["processes"] for r in runs]
    ax.plot(x, [r["orders_per_s"] for r in runs], "o-", label="orders/s")
    ax.plot(x, [r["orders_per_s_per_process"] for r in runs], "s--", label="orders/s per process")
    ax.axvline(result["cpus"], color="#aaa", linestyle=":", label="cores")
    ax.set_xlabel("worker processes")
    ax.legend()
    ax.set_title(f"Drain of {result['orders']} orders")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
