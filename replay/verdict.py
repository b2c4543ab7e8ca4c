"""The verdict of a scheduled run (`shadowtap run`): PASS, FAIL or INCONCLUSIVE, with reasons.

Pure: it reads the run's report (replay/report.py layout) and, in compare mode, its
differences (replay/diff.py summary). The rules, in order:

1. INCONCLUSIVE when the run was interrupted, or the baseline (the version in production)
   itself failed more than `baseline_max_error_rate`: then nothing can be blamed on the
   candidate.
2. FAIL when the candidate broke a limit: its error rate (failed requests and 5xx over its
   requests), its corrected p99 latency (from when each request was due, free of
   coordinated omission), that p99 over the baseline's, or, comparing, an endpoint's share of
   requests with real differences.
3. INCONCLUSIVE when the evidence is too thin: fewer than `min_requests` requests reached the
   candidate, or the generator dropped more than `max_dropped_rate` of its requests (it could
   not keep the rate, so the load was not what was asked).
4. PASS otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from replay.report import server_errors
from shadowtap.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_VERDICT

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


@dataclass(frozen=True, slots=True)
class Criteria:
    """The limits of a run; None switches one off."""

    min_requests: int = 100
    max_error_rate: float | None = 0.01
    max_p99_ms: float | None = None
    max_p99_ratio: float | None = None
    max_dropped_rate: float | None = 0.01
    baseline_max_error_rate: float | None = 0.05
    max_diff_rate: float | None = 0.0
    """Compare mode only."""


@dataclass(frozen=True, slots=True)
class Verdict:
    status: str
    reasons: tuple[str, ...]
    measures: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return {PASS: EXIT_OK, FAIL: EXIT_VERDICT}.get(self.status, EXIT_INCONCLUSIVE)


def error_rate(target: dict[str, Any]) -> float | None:
    """Failed requests and 5xx answers over requests (None without requests)."""
    if not target["requests"]:
        return None
    return (sum(target["errors"].values()) + server_errors(target["status"])) / target["requests"]


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def decide(report: dict[str, Any], criteria: Criteria, candidate: str, baseline: str | None = None,
           diffs: dict[str, Any] | None = None, interrupted: bool = False) -> Verdict:
    """The verdict on one run (see the module docstring for the rules)."""
    c = criteria
    cand = report["targets"][candidate]
    base = report["targets"][baseline] if baseline else None
    schedule = report["schedule"]
    measures: dict[str, Any] = {
        "candidate": {"requests": cand["requests"], "error_rate": error_rate(cand),
                      "p99_ms": cand["corrected_ms"]["p99"]},
        "dropped_rate": schedule["dropped"] / schedule["planned"] if schedule.get("planned") else 0.0,
    }
    if base is not None:
        measures["baseline"] = {"requests": base["requests"], "error_rate": error_rate(base),
                                "p99_ms": base["corrected_ms"]["p99"]}
    if diffs is not None:
        measures["real_diff_requests"] = sum(e["real_diff_requests"] for e in diffs["endpoints"].values())

    unusable = []
    if interrupted:
        unusable.append("the run was interrupted")
    base_errors = measures.get("baseline", {}).get("error_rate")
    if c.baseline_max_error_rate is not None and base_errors is not None and base_errors > c.baseline_max_error_rate:
        unusable.append(f"baseline error rate {_pct(base_errors)} > {_pct(c.baseline_max_error_rate)} "
                        "(baseline_max_error_rate): the version in production failed too")
    if unusable:
        return Verdict(INCONCLUSIVE, tuple(unusable), measures)

    failed = []
    errors, p99 = measures["candidate"]["error_rate"], measures["candidate"]["p99_ms"]
    if c.max_error_rate is not None and errors is not None and errors > c.max_error_rate:
        failed.append(f"candidate error rate {_pct(errors)} > {_pct(c.max_error_rate)} (max_error_rate)")
    if c.max_p99_ms is not None and p99 is not None and p99 > c.max_p99_ms:
        failed.append(f"candidate p99 {p99:.1f} ms > {c.max_p99_ms:g} ms (max_p99_ms)")
    base_p99 = measures.get("baseline", {}).get("p99_ms")
    if c.max_p99_ratio is not None and p99 is not None and base_p99:
        ratio = p99 / base_p99
        measures["p99_ratio"] = ratio
        if ratio > c.max_p99_ratio:
            failed.append(f"candidate p99 {p99:.1f} ms is {ratio:.2f}x the baseline's {base_p99:.1f} ms "
                          f"> {c.max_p99_ratio:g}x (max_p99_ratio)")
    if diffs is not None and c.max_diff_rate is not None:
        over = {name: e["real_diff_rate"] for name, e in diffs["endpoints"].items()
                if e["real_diff_rate"] > c.max_diff_rate}
        for name, rate in sorted(over.items(), key=lambda kv: -kv[1])[:5]:
            failed.append(f"{name}: {_pct(rate)} of requests really differ > {_pct(c.max_diff_rate)} "
                          "(max_diff_rate)")
        if len(over) > 5:
            failed.append(f"... and {len(over) - 5} more endpoints above max_diff_rate")
    if failed:
        return Verdict(FAIL, tuple(failed), measures)

    thin = []
    if cand["requests"] < c.min_requests:
        thin.append(f"{cand['requests']} requests reached the candidate < {c.min_requests} (min_requests)")
    if c.max_dropped_rate is not None and measures["dropped_rate"] > c.max_dropped_rate:
        thin.append(f"the generator dropped {_pct(measures['dropped_rate'])} of its requests > "
                    f"{_pct(c.max_dropped_rate)} (max_dropped_rate): the load was not what was asked")
    if thin:
        return Verdict(INCONCLUSIVE, tuple(thin), measures)
    return Verdict(PASS, (), measures)
