"""README's performance table, regenerated from benchmarks/results/*.json.

Writes the rows between ``<!-- figures:begin -->`` and ``<!-- figures:end -->`` in README.md:
each with the date, the machine, its load average during the run, and the ratios against the
anchor measured in the same run. Run after the benchmarks:

    python benchmarks/figures.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def n(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def ms(value: float) -> str:
    """A median of an even count of rounds is the mean of two: three decimals are enough."""
    return f"{round(value, 3):g}"


def where(machine: str, date: str, load: tuple[Any, Any]) -> str:
    return f"{date}, {machine}, load {load[0]}-{load[1]}"


def storage(r: dict[str, Any]) -> tuple[str, str]:
    """What the run's queues were stored as (its ``--queue-version``), for the row and its command."""
    version = r.get("queue_version")
    if version in (1, 2):
        return f", classic queues v{version} (a policy)", f" --queue-version {version}"
    return "", ""


def worker_rows(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    host = f"{m['host']} ({m['cpu']})" if m.get("cpu") else m["host"]
    queues, flag = storage(r)
    at = where(host, m["date"], (m["loadavg_start"][0], m["loadavg_end"][0])) + queues
    tw, bare = r["tickwork"], r["bare"]
    rounds = " / ".join(str(x) for x in r["ratio_per_round"])
    # Before 2026-12-03 11:00 the bare actors ran inside tickwork's worker processes.
    anchor = "bare Dramatiq" if r.get("bare_anchor") else "bare Dramatiq (in tickwork's workers)"
    text = (
        f"tickwork {n(tw['jobs_per_s_median'])} jobs/s vs {anchor} {n(bare['jobs_per_s_median'])}: "
        f"**ratio {r['ratio']}** (rounds {rounds}); worker CPU per job "
        f"{ms(tw['worker_cpu_ms_per_job_median'])} vs {ms(bare['worker_cpu_ms_per_job_median'])} ms"
    )
    if "ratio_from_first_take" in r:
        # Since 2026-12-03 17:00 the clock starts once every worker process consumes.
        text += (
            f" (clock from every worker process consuming; from the first message taken: ratio "
            f"{r['ratio_from_first_take']}; workers consuming {ms(tw['start_seconds_median'])} vs "
            f"{ms(bare['start_seconds_median'])} s after the spawn)"
        )
    if "tickwork_sync" in r:
        text += (
            f"; with successes written before the thread goes on (the old path) "
            f"{n(r['tickwork_sync']['jobs_per_s_median'])} jobs/s, ratio {r['ratio_sync']}"
        )
    rows = [
        f"| worker drain, {r['jobs']:,} no-op jobs x {len(r['rounds'])} rounds, "
        f"{r['processes']} processes x {r['threads']} threads ({at}) | {text} | "
        f"`PYTHONPATH=. python benchmarks/worker_throughput.py --jobs {r['jobs']} --rounds "
        f"{len(r['rounds'])}{' --also-sync' if 'tickwork_sync' in r else ''}"
        f"{' --with-celery' if 'celery' in r else ''}{flag}` |"
    ]
    if "celery" in r:
        c = r["celery"]
        rows.append(
            f"| same run: Celery, prefork c=2, SQLAlchemy result backend on MariaDB, task_track_started, "
            f"acks_late ({at}) | {n(c['jobs_per_s_median'])} tasks/s, worker CPU per task "
            f"{ms(c['worker_cpu_ms_per_job_median'])} ms; tickwork **{r['ratio_vs_celery']}x** Celery"
            " | same command |"
        )
    if "tickwork_latency_ms" in r:
        t, b = r["tickwork_latency_ms"], r["bare_latency_ms"]
        warm = (t.get("conditions") or {}).get("warmup")
        after = f", after a {warm['messages']}-message warm-up not counted" if warm else ""
        rows.append(
            f"| same run: enqueue → start at {n(t['rate_per_s'])} jobs/s{after} ({at}) | tickwork p50 / p99 "
            f"{t['p50']} / {t['p99']} ms (the row's insert p50 / p99 {t['insert_p50']} / "
            f"{t['insert_p99']} ms"
            + (
                f"; from its commit to the start {t['after_insert_p50']} / {t['after_insert_p99']} ms"
                if "after_insert_p50" in t
                else ""
            )
            + (
                f": to the claim {t['path']['to_claim_p50']} / {t['path']['to_claim_p99']} ms, from the claim"
                f" to the start {t['path']['claim_to_start_p50']} / {t['path']['claim_to_start_p99']} ms"
                if "to_claim_p50" in t.get("path", {})
                else ""
            )
            + f") vs bare Dramatiq {b['p50']} / {b['p99']} ms | same command |"
        )
    return rows


def scale_out_row(r: dict[str, Any]) -> str:
    m = r["machine"]
    queues, flag = storage(r)
    at = where(m["host"], m["date"], (m["loadavg_start"][0], m["loadavg_end"][0])) + queues
    parts = [
        f"{p['processes']}x{p['threads']}: {n(p['tickwork']['jobs_per_s'])} ({n(p['bare']['jobs_per_s'])})"
        for p in r["scale_out"]
    ]
    return (
        f"| workers scaling out, processes x threads, {r['jobs']:,} jobs per drain ({at}) | tickwork jobs/s "
        f"(bare Dramatiq): {'; '.join(parts)}; plot `worker_scale_out.png` | "
        f"`PYTHONPATH=. python benchmarks/worker_throughput.py --scale-out --jobs {r['jobs']} "
        f"--out benchmarks/results/worker_scale_out.json{flag}` |"
    )


def scheduling_rows(r: dict[str, Any]) -> list[str]:
    date = r["measured_at"][:16].replace("T", " ") + " UTC"
    host = r.get("machine", "?") + (f" ({r['cpu']})" if r.get("cpu") else "")
    queues, flag = storage(r)
    at = where(host, date, (r["loadavg_start"][0], r["loadavg_end"][0])) + queues
    a = r.get("apscheduler_anchor")
    rows = []
    if a:
        rows.append(
            f"| anchor: APScheduler 3 in-process, 1,000 cron jobs a second, no store, no broker ({at}) | "
            f"dispatch lag p50 / p99 {n(a['dispatch_lag_ms']['p50'])} / {n(a['dispatch_lag_ms']['p99'])} ms "
            f"| `PYTHONPATH=. python benchmarks/scheduling.py --sizes 1000 10000{flag}` |"
        )
    for res in r["results"]:
        lag = res["publish_lag_ms"]
        ratio = res.get("publish_lag_p99_vs_apscheduler")
        rows.append(
            f"| tickwork, {res['schedules']:,} schedules at 1,000 fires/s, leader + standby, leader "
            f"SIGKILLed at {res['kill_at_seconds']:.0f} s ({at}) | publish lag p50 / p99 {n(lag['p50'])} / "
            f"{n(lag['p99'])} ms"
            + (f" (**{ratio}x** the anchor's p99)" if ratio is not None else "")
            + f"; failover gap {res['failover_gap_seconds']:.2f} s"
            + (
                f" (lease left at the kill {res['failover_lease_left_ms']} ms, taken over after "
                f"{res['failover_takeover_ms']} ms)"
                if res.get("failover_takeover_ms") is not None
                else ""
            )
            + f"; {res['duplicates']} duplicates, "
            f"{res['misses']} misses in {res['fires_expected']:,} fires; leader CPU "
            f"{res['leader_cpu_percent']:.1f} % of a core | same command |"
        )
    return rows


def lease_row(r: dict[str, Any]) -> str:
    date = r["measured_at"][:16].replace("T", " ") + " UTC"
    loads = [x[0] for x in r["loadavg_samples"]]
    host = r["machine"] + (f" ({r['cpu']})" if r.get("cpu") else "")
    at = f"{date}, {host}, 1-min load {min(loads)}-{max(loads)}"
    return (
        f"| no false failover: leader + standby, defaults (TTL {r['leader_ttl_ms']} ms, renew "
        f"{r['leader_renew_ms']} ms), {r['schedules']:,} every-second schedules, {r['burners']} CPU "
        f"burner(s), {r['minutes']:.0f} min, nothing killed ({at}) | {r['false_failovers']} lease changes; "
        f"{r['duplicates']} duplicates, {r['misses']} misses in {r['fires_expected']:,} fires | "
        f"`PYTHONPATH=. python benchmarks/lease_watch.py --minutes {r['minutes']:.0f} "
        f"--burners {r['burners']}` |"
    )


def scale_row(r: dict[str, Any]) -> str:
    date = r["measured_at"][:16].replace("T", " ") + " UTC"
    queues, flag = storage(r)
    at = where(r["machine"], date, (r["loadavg_start"][0], r["loadavg_end"][0])) + queues
    lag = r["publish_lag_ms"]
    return (
        f"| scale: {r['schedules']:,} minutely schedules spread over the minute "
        f"(~{n(r['fires_per_second_scheduled'])} fires/s), {r['runs_in_table_before']:,} runs in the table"
        + (
            f" ({r['runs_in_table_after']:,} of them at the end)"
            if r.get("runs_in_table_after") is not None
            else ""
        )
        + f" ({at}) | publish lag p50 / p99 {n(lag['p50'])} / {n(lag['p99'])} ms; ticker CPU "
        f"{r['ticker_cpu_percent']} % of a core ({r['ticker_cpu_percent_per_1000_schedules']} % per 1,000 "
        f"schedules), peak RSS {r['ticker_peak_rss_mb']} MB ({r['ticker_peak_rss_mb_per_1000_schedules']} MB "
        f"per 1,000); {r['duplicates']} duplicates, {r['misses']} misses; EXPLAIN in `scale.json` | "
        f"`PYTHONPATH=. python benchmarks/scale.py{flag}` |"
    )


def publish_instant_row(r: dict[str, Any]) -> str:
    m, s = r["machine"], r["summary"]
    queues, flag = storage(r)
    at = where(m["host"], m["date"], (m["loadavg_start"][0], m["loadavg_end"][0])) + queues

    def send(arm: str) -> str:
        return f"{s[arm]['send_ms']['p50']} / {s[arm]['send_ms']['p90']}"

    return (
        f"| one fire instant's publish: {r['messages_per_batch']:,} persistent messages, one write and one"
        f" RabbitMQ transaction, {r['rounds']} alternating rounds ({at}) | tickwork's path p50 / p90"
        f" {send('tickwork')} ms (before the instant: marshalled {s['tickwork']['prepare_ms']['p50']} ms"
        + (
            f", written into the transaction {s['tickwork']['stage_ms']['p50']} ms, the instant's"
            " commit timed"
            if "stage_ms" in s["tickwork"]
            else ""
        )
        + ");"
        f" the same frames {send('tx')}"
        + (
            f"; written before the instant, only the commit at it {send('tx_staged')}"
            if "tx_staged" in s
            else ""
        )
        + f"; publisher confirms {send('confirm')}; over 2 / 4 channels"
        f" {send('tx_2ch')} / {send('tx_4ch')}; not persistent {send('tx_transient')} ms"
        f" | `PYTHONPATH=. python benchmarks/publish_instant.py{flag}` |"
    )


def rows() -> list[str]:
    out = ["| what (date, machine, load average) | figure | reproduce |", "| --- | --- | --- |"]
    if (r := load("worker_throughput.json")) is not None:
        out += worker_rows(r)
    if (r := load("worker_scale_out.json")) is not None:
        out.append(scale_out_row(r))
    if (r := load("scheduling.json")) is not None:
        out += scheduling_rows(r)
    if (r := load("publish_instant.json")) is not None:
        out.append(publish_instant_row(r))
    if (r := load("lease_watch.json")) is not None:
        out.append(lease_row(r))
    if (r := load("scale.json")) is not None:
        out.append(scale_row(r))
    return out


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} … {END} block")
    table = "\n".join(rows())
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), f"{BEGIN}\n{table}\n{END}", text, flags=re.S)
    readme.write_text(text)
    print(table)


if __name__ == "__main__":
    main()
