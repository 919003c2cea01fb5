"""`--perf-report PATH`: a markdown table per model and a PNG of latency against length and batch."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from baselines.store import Baselines

MIB = 2**20


def _latest(notes: list[dict], kind: str) -> dict[str, dict[str, dict]]:
    """model -> key -> the last note of `kind` for that key."""
    table: dict[str, dict[str, dict]] = defaultdict(dict)
    for note in notes:
        if note["kind"] == kind:
            table[note["model"]][note.get("key") or note.get("sizes")] = note
    return table


def _fmt(value, pattern: str, missing: str = "-") -> str:
    return missing if value is None else format(value, pattern)


def _model_section(model: str, notes: list[dict], latency: dict, memory: dict) -> list[str]:
    lines = [f"## {model}", "",
             "| input sizes | latency ms (IQR) | calibrated ratio | baseline ratio | x baseline | tries |"
             " peak MiB | baseline MiB | x baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(set(latency) | set(memory)):
        lat, mem = latency.get(key), memory.get(key)
        sizes = (lat or mem)["sizes"]
        base_lat = (lat or {}).get("baseline") or {}
        base_mem = (mem or {}).get("baseline") or {}
        lat_cells = ["-", "-", "-", "-", "-"]
        if lat:
            lat_cells = [f"{lat['ms']:.3f} ({lat['iqr_ms']:.3f})", f"{lat['ratio']:.1f}",
                         _fmt(base_lat.get("ratio"), ".1f", "missing"),
                         _fmt(lat["ratio"] / base_lat["ratio"] if base_lat else None, ".2f"),
                         ", ".join(f"{r:.1f}" for r in lat["attempts"])]
        mem_cells = ["-", "-", "-"]
        if mem:
            base = base_mem.get("peak_bytes")
            mem_cells = [f"{mem['peak_bytes'] / MIB:.2f}", _fmt(base / MIB if base is not None else None, ".2f", "missing"),
                         _fmt(mem["peak_bytes"] / base if base else None, ".2f")]
        lines.append(f"| `{sizes}` | " + " | ".join(lat_cells + mem_cells) + " |")
    for note in notes:
        if note["kind"] == "scaling":
            ms = ", ".join(f"{n}: {t:.2f}" for n, t in sorted(note["ms"].items(), key=lambda kv: int(kv[0])))
            lines.append(f"- length scaling at batch {note['batch']}: exponent {note['exponent']:.2f} (ms by length: {ms})")
        elif note["kind"] == "throughput":
            ms = ", ".join(f"{b}: {t:.2f}" for b, t in sorted(note["ms"].items(), key=lambda kv: int(kv[0])))
            lines.append(f"- batch throughput: {note['gain']:.2f}x items/s at the larger batch (ms by batch: {ms})")
        elif note["kind"] == "leak":
            lines.append(f"- leak at `{note['sizes']}`: live tensors {note['growth_bytes']:+d} B, "
                         f"resident set {note['rss_growth'] / MIB:+.2f} MiB over the window")
    return lines + [""]


def write_markdown(notes: list[dict], path: Path, store: Baselines) -> Path:
    latency, memory = _latest(notes, "latency"), _latest(notes, "memory")
    by_model: dict[str, list[dict]] = defaultdict(list)
    for note in notes:
        by_model[note["model"]].append(note)
    lines = ["# hfprops performance report", "",
             f"Machine fingerprint `{store.id}`: " + ", ".join(f"{k} {v}" for k, v in store.fingerprint.items()) + ".",
             f"Baselines: `{store.path}` ({len(store.entries)} stored sizes). Latency is the thread CPU time "
             "(median of blocked runs); the calibrated ratio divides it by a fixed matmul + softmax timed around it. "
             "'tries' lists every measurement of a comparison (a failing one is re-measured).", ""]
    for model in sorted(by_model):
        lines += _model_section(model, by_model[model], latency.get(model, {}), memory.get(model, {}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def write_plot(notes: list[dict], path: Path) -> Path:
    """Latency against sequence length (length-scaling ladders) and against batch size (throughput pairs)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (by_length, by_batch) = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, kind, label in ((by_length, "scaling", "sequence length"), (by_batch, "throughput", "batch size")):
        points: dict[str, dict[int, float]] = defaultdict(dict)
        for note in notes:
            if note["kind"] == kind:
                points[note["model"]] = {int(k): v for k, v in note["ms"].items()}  # the last one
        for model, series in sorted(points.items()):
            xs = sorted(series)
            axis.plot(xs, [series[x] for x in xs], marker="o", label=model)
        axis.set(xscale="log", yscale="log", xlabel=label, ylabel="latency (ms, CPU time)",
                 title=f"latency against {label}")
        # Plain numbers on the log axes (not 2x10^1); the x ticks are the measured sizes.
        plain = matplotlib.ticker.FormatStrFormatter("%g")
        axis.set_xticks(sorted({x for series in points.values() for x in series}))
        axis.xaxis.set_major_formatter(plain)
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.yaxis.set_major_formatter(plain)
        axis.yaxis.set_minor_formatter(plain)
        if points:
            axis.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(notes: list[dict], path: Path, store: Baselines) -> list[Path]:
    """The markdown report at `path` and the plot at `path` with suffix `.png`."""
    return [write_markdown(notes, path, store), write_plot(notes, path.with_suffix(".png"))]
