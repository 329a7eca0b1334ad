"""The benchmark's results as a Markdown table, each figure beside its baseline and target."""

from __future__ import annotations

from typing import Any

from bench import startup


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:,.2f} s"


def _late(figures: dict[str, Any], name: str) -> str:
    """A lateness percentile over all expected messages: exact, a lower bound when it falls on
    messages that never arrived, or a range when missing ones make it uncertain."""
    upper, lower = figures[f"lateness_{name}_s"], figures[f"lateness_{name}_at_least_s"]
    if upper is None:
        return f"≥ {_s(lower)}"
    if upper != lower:
        return f"{lower:,.2f} to {_s(upper)}"
    return _s(upper)


def _lateness(figures: dict[str, Any], grace: float) -> str:
    text = " / ".join(_late(figures, name) for name in ("p50", "p99", "max"))
    if figures["missing"]:
        text += (
            f" ({figures['missing']:,} of {figures['expected']:,} not sent within "
            f"{grace:.0f} s after the window)"
        )
    return text


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def targets(result: dict[str, Any]) -> dict[str, bool]:
    """Issue 5's targets, each met or not."""
    base = result["baselines"]
    ingest, fanout, timers, ack = (result[k] for k in ("ingest", "fanout", "timers", "ack"))
    fanout_ratio = (
        base["fanout"]["seconds"] / fanout["seconds"] if fanout["seconds"] is not None else 0.0
    )
    return {
        "ingest rate >= 30 % of bare": ingest["per_second"] >= 0.3 * base["ingest"]["per_second"],
        "ingest p99 < 100 ms": ingest["p99_ms"] < 100,
        "fan-out >= 50 % of raw loop": fanout_ratio >= 0.5,
        "timers p99 lateness <= 1 s": timers["missing"] == 0 and timers["lateness_p99_s"] <= 1,
        "timers peak RSS <= 250 MB": timers["peak_rss_mb"] <= 250,
        "restart with them pending <= 5 s": timers["startup_seconds"] <= 5,
        "ack p99 < 50 ms": ack["p99_ms"] < 50,
    }


def machine_line(result: dict[str, Any]) -> str:
    machine = result["machine"]
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['arch']}, "
        f"Python {machine['python']}; load average {machine['load_average_at_start']:.1f} at "
        f"the start, {machine['load_average_at_end']:.1f} at the end; {result['when']}."
    )


def markdown(result: dict[str, Any]) -> str:
    base = result["baselines"]
    ingest, fanout, timers, ack = (result[k] for k in ("ingest", "fanout", "timers", "ack"))
    met = targets(result)
    size = result["size"]
    raw = base["fanout"]
    fanout_rate = fanout["messages"] / fanout["seconds"] if fanout["seconds"] else 0.0
    raw_rate = raw["messages"] / raw["seconds"]
    rows = [
        (
            f"ingest: events/s at {size['concurrency']} concurrent",
            f"{ingest['per_second']:,.0f}",
            f"bare FastAPI: {base['ingest']['per_second']:,.0f}",
            f"{ingest['per_second'] / base['ingest']['per_second']:.1%}",
            f"≥ 30 %: {_verdict(met['ingest rate >= 30 % of bare'])}",
        ),
        (
            "ingest: latency p50 / p99",
            f"{ingest['p50_ms']:,.0f} / {ingest['p99_ms']:,.0f} ms",
            f"{base['ingest']['p50_ms']:,.0f} / {base['ingest']['p99_ms']:,.0f} ms",
            "",
            f"p99 < 100 ms: {_verdict(met['ingest p99 < 100 ms'])}",
        ),
        (
            f"fan-out: {fanout['events']:,} events x 4 contacts, first POST to "
            f"{fanout['messages']:,}th message at the sink",
            f"{_s(fanout['seconds'])} ({fanout_rate:,.0f} msg/s)",
            f"aiosmtplib, {raw['connections']} connections: {_s(raw['seconds'])} "
            f"({raw_rate:,.0f} msg/s, {raw['message_bytes']:,} B each)",
            f"{fanout_rate / raw_rate:.1%}",
            f"≥ 50 %: {_verdict(met['fan-out >= 50 % of raw loop'])}",
        ),
        (
            f"timers: {timers['pending']:,} due over {timers['window_seconds']:.0f} s, "
            "lateness p50 / p99 / max",
            _lateness(timers, size["timers_grace_seconds"]),
            "asyncio timer loop: " + _lateness(base["timers"], size["timers_grace_seconds"]),
            f"{timers['sent'] / base['timers']['sent']:.1%} as many sent within the wait"
            if base["timers"]["sent"]
            else "",
            f"p99 ≤ 1 s: {_verdict(met['timers p99 lateness <= 1 s'])}",
        ),
        (
            "timers: service peak RSS",
            f"{timers['peak_rss_mb']:,.0f} MB",
            "",
            "",
            f"≤ 250 MB: {_verdict(met['timers peak RSS <= 250 MB'])}",
        ),
        (
            f"timers: restart with {timers['pending']:,} pending",
            _s(timers["startup_seconds"]),
            f"first start, no rows, every template rendered: {_s(timers['first_start_seconds'])}",
            "",
            f"≤ 5 s: {_verdict(met['restart with them pending <= 5 s'])}",
        ),
        (
            f"ack: POST /ack latency p50 / p99 at {size['concurrency']} concurrent",
            f"{ack['p50_ms']:,.0f} / {ack['p99_ms']:,.0f} ms ({ack['per_second']:,.0f}/s)",
            f"bare form endpoint: {base['ack']['p50_ms']:,.0f} / {base['ack']['p99_ms']:,.0f} ms "
            f"({base['ack']['per_second']:,.0f}/s)",
            f"{ack['per_second'] / base['ack']['per_second']:.1%}",
            f"p99 < 50 ms: {_verdict(met['ack p99 < 50 ms'])}",
        ),
        *startup.markdown(result["startup"], "SQLite"),
    ]
    lines = [
        machine_line(result),
        "",
        "| measurement | oos-notify | baseline, same run | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    errors = {
        name: statuses
        for name, statuses in (
            ("ingest", ingest["statuses"]),
            ("fan-out", fanout["posts"]["statuses"]),
            ("ack", ack["statuses"]),
        )
        if set(statuses) - {"200", "202"}
    }
    if errors:
        lines += ["", f"Unexpected status codes: {errors}"]
    lines += [
        "",
        f"Timers: {timers['pending']:,} first notices loaded in {timers['load_seconds']:.0f} s "
        f"({timers['incidents_ingested']:,} incidents opened through events.ingest, "
        f"{timers['incidents_copied']:,} copied from them by SQL); "
        f"{timers['copies_first_notices_sent']:,} of the copies' "
        f"{timers['copies_first_notices']:,} first notices reached the sink within the wait; "
        f"the service was ready {timers['ready_before_first_due_seconds']:.1f} s before the "
        "first was due.",
    ]
    return "\n".join(lines)
