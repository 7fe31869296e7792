"""Reports of an eval run: terminal table, JUnit XML, Markdown for a pull request, JSON.

Every report says the gate verdict and why, per check; regression checks say whether the drop
exceeded the margin, whether it was significant, or both. Reports name the rows that regressed
(against the baseline) or failed, worst first, with links into the Keel UI when a base URL is
known.
"""

from __future__ import annotations

import math
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from keel.core.evals import EvalRowResult
from keel.evals.ci import Comparison, RunOutcome
from keel.evals.gates import evaluator_stats, flipped_rows, norm_name


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _short(v: Any, n: int = 80) -> str:
    s = v if isinstance(v, str) else repr(v)
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def row_link(base: str | None, run_id: str, row_id: str) -> str | None:
    """UI link to one row of a run."""
    if not base:
        return None
    return f"{base.rstrip('/')}/evals/runs/{run_id}#row-{row_id}"


def run_link(base: str | None, run_id: str) -> str | None:
    """UI link to a run."""
    return f"{base.rstrip('/')}/evals/runs/{run_id}" if base else None


def evaluator_table(o: RunOutcome) -> list[dict[str, Any]]:
    """Per evaluator: rows, mean, pass rate, p10, errors, and the baseline comparison."""
    stats = evaluator_stats(o.results)
    comps = {norm_name(c.evaluator): c for c in o.comparisons}
    out = []
    for name, st in stats.items():
        c = comps.get(norm_name(name))
        out.append(
            {
                "evaluator": name,
                **st.summary(),
                "baseline_mean": c.baseline_mean if c else None,
                "delta": c.mean_delta if c else None,
                "ci": [c.ci_low, c.ci_high] if c else None,
            }
        )
    return out


def worst_regressions(o: RunOutcome, limit: int = 10) -> list[dict[str, Any]]:
    """Rows that dropped most against the baseline (or, without one, rows that failed)."""
    items: list[dict[str, Any]] = []
    if o.comparisons:
        by_row = {r.row_id: r for r in o.results}
        for c in o.comparisons:
            for row_id, d in c.deltas.items():
                if d < 0:
                    r = by_row.get(row_id)
                    items.append(
                        {
                            "row_id": row_id,
                            "evaluator": c.evaluator,
                            "delta": round(d, 6),
                            "input": r.input if r else None,
                            "output": r.output if r else None,
                            "link": row_link(o.links, o.run.id, row_id),
                        }
                    )
        items.sort(key=lambda x: (x["delta"], x["row_id"]))
        return items[:limit]
    for r in o.results:
        if r.error:
            items.append(_failed(o, r, "target", None, r.error))
            continue
        for s in r.scores:
            if s.error or s.passed is False:
                items.append(_failed(o, r, s.evaluator, s.value, s.error or s.reason))
    items.sort(key=lambda x: (x["value"] if x["value"] is not None else -1.0, x["row_id"]))
    return items[:limit]


def _failed(
    o: RunOutcome, r: EvalRowResult, ev: str, value: float | None, why: Any
) -> dict[str, Any]:
    return {
        "row_id": r.row_id,
        "repeat": r.repeat,
        "evaluator": ev,
        "value": value,
        "reason": why,
        "input": r.input,
        "output": r.output,
        "link": row_link(o.links, o.run.id, r.row_id),
    }


# --------------------------------------------------------------------------- JSON


def json_report(o: RunOutcome) -> dict[str, Any]:
    """The whole outcome as JSON-friendly data."""
    flipped = flipped_rows(o.results, o.baseline_results) if o.baseline_results else []
    return {
        "run": o.run.model_dump(mode="json"),
        "passed": o.verdict.passed,
        "verdict": o.verdict.model_dump(mode="json"),
        "evaluators": evaluator_table(o),
        "comparisons": [c.as_dict() for c in o.comparisons],
        "baseline_run": o.baseline.id if o.baseline else None,
        "worst": worst_regressions(o, limit=50),
        "flipped": flipped,
        "link": run_link(o.links, o.run.id),
    }


# --------------------------------------------------------------------------- terminal


def print_terminal(o: RunOutcome, console: Any) -> None:
    """Rich tables: evaluators, gate checks, worst rows."""
    from rich.table import Table

    run = o.run
    console.print(
        f"[bold]{run.suite}[/] run [cyan]{run.id}[/] · {run.target} · dataset "
        f"{run.dataset_name or 'inline'}{'@' + str(run.dataset_version) if run.dataset_version else ''}"
        f" · {len(o.results)} result(s), {run.summary.get('errors', 0)} error(s), "
        f"{run.summary.get('cached', 0)} cached, ${run.summary.get('cost_usd', 0):.4f}"
    )
    t = Table(title="evaluators", header_style="bold cyan")
    for col in ("evaluator", "rows", "mean", "pass rate", "p10", "errors", "baseline", "Δ", "CI"):
        t.add_column(col)
    for e in evaluator_table(o):
        ci = e["ci"]
        t.add_row(
            e["evaluator"],
            str(e["rows"]),
            _f(e["mean"]),
            _f(e["pass_rate"]),
            _f(e["p10"]),
            str(e["errors"]),
            _f(e["baseline_mean"]),
            (f"{e['delta']:+.3f}" if e["delta"] is not None else "–"),
            f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "–",
        )
    console.print(t)
    g = Table(title="gate", header_style="bold cyan")
    g.add_column("check")
    g.add_column("result")
    g.add_column("detail")
    for c in o.verdict.checks:
        mark = "[green]pass[/]" if c["passed"] else "[bold red]FAIL[/]"
        if c.get("skipped"):
            mark = "[yellow]skipped[/]"
        g.add_row(str(c["name"]), mark, str(c.get("detail", "")))
    console.print(g)
    worst = worst_regressions(o, limit=10)
    if worst:
        w = Table(
            title="worst regressions" if o.comparisons else "failing rows", header_style="bold cyan"
        )
        for col in ("row", "evaluator", "Δ" if o.comparisons else "value", "input", "output"):
            w.add_column(col)
        for x in worst:
            w.add_row(
                x["row_id"],
                x["evaluator"],
                f"{x['delta']:+.3f}" if o.comparisons else _f(x.get("value")),
                _short(x["input"], 40),
                _short(x["output"], 40),
            )
        console.print(w)
    verdict = "[bold green]GATE PASSED[/]" if o.verdict.passed else "[bold red]GATE FAILED[/]"
    console.print(f"{verdict} {o.verdict.summary}")


# --------------------------------------------------------------------------- Markdown


def markdown_report(o: RunOutcome, *, max_rows: int = 10) -> str:
    """A pull-request comment: verdict, summary table, checks, worst rows with links."""
    run = o.run
    icon = "✅" if o.verdict.passed else "❌"
    title = f"{icon} Keel eval `{run.suite}`: **{'passed' if o.verdict.passed else 'failed'}**"
    link = run_link(o.links, run.id)
    lines = [f"### {title}", ""]
    ds = f"{run.dataset_name or 'inline'}" + (
        f"@{run.dataset_version}" if run.dataset_version else ""
    )
    lines.append(
        f"Run {f'[`{run.id}`]({link})' if link else f'`{run.id}`'} · target `{run.target}` · "
        f"dataset `{ds}` · {len(o.results)} result(s) · {run.summary.get('errors', 0)} error(s) · "
        f"cost ${run.summary.get('cost_usd', 0):.4f}"
        + (f" · baseline `{o.baseline.id}`" if o.baseline else "")
    )
    lines += [
        "",
        "| evaluator | rows | mean | pass rate | p10 | Δ vs baseline | CI |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for e in evaluator_table(o):
        ci = e["ci"]
        delta = f"{e['delta']:+.3f}" if e["delta"] is not None else "–"
        ci_s = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "–"
        lines.append(
            f"| {e['evaluator']} | {e['rows']} | {_f(e['mean'])} | {_f(e['pass_rate'])} | "
            f"{_f(e['p10'])} | {delta} | {ci_s} |"
        )
    lines += ["", "**Gate**", ""]
    for c in o.verdict.checks:
        mark = "⏭️" if c.get("skipped") else ("✅" if c["passed"] else "❌")
        lines.append(f"- {mark} `{c['name']}`: {_md(str(c.get('detail', '')))}")
    worst = worst_regressions(o, limit=max_rows)
    if worst:
        lines += ["", "**Worst regressions**" if o.comparisons else "**Failing rows**", ""]
        head = "Δ" if o.comparisons else "score"
        lines += [f"| row | evaluator | {head} | input | output |", "|---|---|---:|---|---|"]
        for x in worst:
            rid = f"[`{x['row_id']}`]({x['link']})" if x.get("link") else f"`{x['row_id']}`"
            val = f"{x['delta']:+.3f}" if o.comparisons else _f(x.get("value"))
            lines.append(
                f"| {rid} | {x['evaluator']} | {val} | {_md(_short(x['input'], 60))} | "
                f"{_md(_short(x['output'], 60))} |"
            )
    if o.baseline_results:
        fl = flipped_rows(o.results, o.baseline_results)
        broke = [f for f in fl if f["direction"] == "broke"]
        fixed = [f for f in fl if f["direction"] == "fixed"]
        lines += ["", f"Rows that flipped: {len(broke)} now failing, {len(fixed)} now passing."]
        if broke:
            lines.append(
                "Now failing: "
                + ", ".join(f"`{f['row_id']}` ({f['evaluator']})" for f in broke[:20])
                + (" …" if len(broke) > 20 else "")
            )
    return "\n".join(lines) + "\n"


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- JUnit


def junit_xml(o: RunOutcome) -> str:
    """JUnit XML: one test case per row × evaluator, plus one per gate check."""
    run = o.run
    suite = run.suite or "keel-eval"
    cases: list[str] = []
    failures = errors = 0
    for r in o.results:
        rid = r.row_id if r.repeat == 0 else f"{r.row_id}#{r.repeat}"
        for s in r.scores:
            name = quoteattr(f"{rid}")
            cls = quoteattr(f"{suite}.{s.evaluator}")
            t = f"{(s.latency_ms or 0) / 1000:.6f}"
            body = ""
            if r.error:
                errors += 1
                body = f"<error message={quoteattr(_short(r.error, 200))}>{escape(str(r.error))}</error>"
            elif s.error:
                errors += 1
                body = f"<error message={quoteattr(_short(s.error, 200))}>{escape(s.error)}</error>"
            elif s.passed is False:
                failures += 1
                msg = f"score {_f(s.value)} below threshold {_f(s.threshold)}: {s.reason or ''}"
                detail = f"input: {_short(r.input, 500)}\noutput: {_short(r.output, 500)}\n{s.reason or ''}"
                body = f"<failure message={quoteattr(_short(msg, 200))}>{escape(detail)}</failure>"
            cases.append(f'    <testcase classname={cls} name={name} time="{t}">{body}</testcase>')
    gate_cases = []
    gate_fail = 0
    for c in o.verdict.checks:
        body = ""
        if c.get("skipped"):
            body = f"<skipped message={quoteattr(str(c.get('detail', '')))}/>"
        elif not c["passed"]:
            gate_fail += 1
            body = f"<failure message={quoteattr(str(c.get('detail', '')))}/>"
        gate_cases.append(
            f'    <testcase classname={quoteattr(suite + ".gate")} name={quoteattr(str(c["name"]))} time="0">{body}</testcase>'
        )
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f"<testsuites name={quoteattr('keel eval ' + suite)}>",
    ]
    out.append(
        f'  <testsuite name={quoteattr(suite + " rows")} tests="{len(cases)}" failures="{failures}" '
        f'errors="{errors}" skipped="0">'
    )
    out += cases
    out.append("  </testsuite>")
    out.append(
        f'  <testsuite name={quoteattr(suite + " gate")} tests="{len(gate_cases)}" '
        f'failures="{gate_fail}" errors="0" skipped="{sum(1 for c in o.verdict.checks if c.get("skipped"))}">'
    )
    out += gate_cases
    out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- compare


def comparison_json(c: Comparison) -> dict[str, Any]:
    """``keel eval compare`` as JSON."""
    return {
        "baseline": c.a.id,
        "candidate": c.b.id,
        "evaluators": c.evaluators,
        "flipped": c.flipped,
    }
