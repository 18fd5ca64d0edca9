"""What the benchmark writes: the machine it ran on, progress lines, the tables and bench.png."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .sweep import StepResult


def machine_info() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # Other jobs on the machine skew every figure; the step records say how much CPU they took.
        "load_average_at_start": load_average(),
    }


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------- progress lines


def step_line(s: StepResult) -> str:
    mean_batch = (s.batch_size or {}).get("mean")
    return (
        f"  {s.config:<8} {s.protocol:<4} c={s.concurrency:<4} #{s.repeat}: {s.images_per_s:8.1f} img/s  "
        f"p50 {s.latency_ms['p50']} ms  p99 {s.latency_ms['p99']} ms  batch {mean_batch}  errors {s.errors_total}  "
        f"cpu s: server {s.server_cpu_s} client {s.client_cpu_s} other {s.other_cpu_s}"
    )


def engine_line(r: dict[str, Any]) -> str:
    return (
        f"  engine batch {r['batch_size']:<4}: engine {r['engine_images_per_s']:8.1f} img/s  "
        f"plain {r['plain_images_per_s']:8.1f} img/s  ratio {r['engine_over_plain']}"
    )


def profile_lines(ops: list[dict[str, Any]]) -> str:
    return "\n".join(f"      {o['share']:6.1%} {o['ms_per_image']:8.3f} ms/img  {o['op']}" for o in ops)


# ----------------------------------------------------------------------------- tables


def print_tables(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"\nMachine: {m['cpu_model']}, {m['cpu_cores']} cores, GPU: {m['gpu'] or 'none'}, torch {m['torch']}")
    if report.get("summary"):
        print(
            f"\n{'config':<9}{'proto':<6}{'conc':>5}{'img/s':>10}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'batch':>8}"
            f"{'errors':>8}{'infer ms/img':>14}"
        )
        for r in report["summary"]:
            lat = r["latency_ms"]
            print(
                f"{r['config']:<9}{r['protocol']:<6}{r['concurrency']:>5}{_fmt(r['images_per_s']):>10}{_fmt(lat['p50']):>10}"
                f"{_fmt(lat['p90']):>10}{_fmt(lat['p99']):>10}{_fmt(r['mean_batch_size']):>8}{r['errors_total']:>8}"
                f"{_fmt(r['stage_ms_per_image']['inference']):>14}"
            )
    if report.get("batching_gain"):
        print(f"\n{'proto':<6}{'conc':>5}{'batched':>10}{'mbs=1':>10}{'ratio':>8}")
        for g in report["batching_gain"]:
            print(
                f"{g['protocol']:<6}{g['concurrency']:>5}{_fmt(g['batched_images_per_s']):>10}"
                f"{_fmt(g['baseline_images_per_s']):>10}{_fmt(g['ratio']):>8}"
            )
    if report.get("hop_cost"):
        print("\nThrough the transformer (hop) against the predictor directly:")
        print(
            f"{'proto':<7}{'conc':>5}{'direct img/s':>14}{'hop img/s':>11}{'direct p50':>12}{'hop p50':>9}"
            f"{'+p50 ms':>9}{'+p99 ms':>9}{'batch d/h':>11}"
        )
        for h in report["hop_cost"]:
            print(
                f"{h['protocol']:<7}{h['concurrency']:>5}{_fmt(h['direct_images_per_s']):>14}"
                f"{_fmt(h['hop_images_per_s']):>11}{_fmt(h['direct_latency_ms']['p50']):>12}"
                f"{_fmt(h['hop_latency_ms']['p50']):>9}{_fmt(h['added_ms']['p50']):>9}{_fmt(h['added_ms']['p99']):>9}"
                f"{_fmt(h['direct_mean_batch']) + '/' + _fmt(h['hop_mean_batch']):>11}"
            )
    if report.get("engine"):
        e = report["engine"]
        print(f"\nEngine only ({e['device']}, {e['precision']}, compile={e['compile']}):")
        print(f"{'batch':>6}{'engine img/s':>14}{'plain img/s':>13}{'ratio':>8}{'engine ms':>11}{'plain ms':>10}")
        for r in e["results"]:
            print(
                f"{r['batch_size']:>6}{_fmt(r['engine_images_per_s']):>14}{_fmt(r['plain_images_per_s']):>13}"
                f"{_fmt(r['engine_over_plain']):>8}{_fmt(r['engine_batch_ms_p50']):>11}{_fmt(r['plain_batch_ms_p50']):>10}"
            )


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


# ----------------------------------------------------------------------------- plot


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    summary, engine = report.get("summary") or [], report.get("engine")
    panels = (2 if summary else 0) + (1 if engine else 0)
    fig, grid = plt.subplots(1, max(panels, 1), figsize=(6 * max(panels, 1), 4.5), squeeze=False)
    axes = list(grid[0])
    if summary:
        _plot_network(summary, axes.pop(0), axes.pop(0))
    if engine:
        _plot_engine(engine, axes.pop(0))
    m = report["machine"]
    fig.suptitle(f"{report['model']['name']} on {m['gpu'] or m['cpu_model']} ({m['cpu_cores']} CPU cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_network(summary: list[dict[str, Any]], throughput_ax: Any, p99_ax: Any) -> None:
    lines: dict[str, list[dict[str, Any]]] = {}
    for r in summary:
        lines.setdefault(f"{r['protocol']} {r['config']}", []).append(r)
    for label, rows in sorted(lines.items()):
        rows.sort(key=lambda r: r["concurrency"])
        style = "--" if label.endswith(("baseline", "hop")) else "-"
        xs = [r["concurrency"] for r in rows]
        throughput_ax.plot(xs, [r["images_per_s"] for r in rows], style, marker="o", label=label)
        p99_ax.plot(xs, [r["latency_ms"]["p99"] for r in rows], style, marker="o", label=label)
    for ax, ylabel in ((throughput_ax, "images/s"), (p99_ax, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)


def _plot_engine(engine: dict[str, Any], ax: Any) -> None:
    rows = engine["results"]
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["plain_images_per_s"] for r in rows], 0.4, label="plain model(x)")
    ax.bar(xs + 0.2, [r["engine_images_per_s"] for r in rows], 0.4, label="Engine.predict_tensor")
    ax.set_xticks(xs, [str(r["batch_size"]) for r in rows])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images/s")
    ax.set_title(f"engine only ({engine['device']}, {engine['precision']}, compile={engine['compile']})")
    ax.legend(fontsize=8)
