"""`shadowtap run CONFIG.toml`: one scheduled dark-traffic run that ends in a verdict.

Made for cron: the config says what to replay, against what, how hard and for how long, and
what a good candidate looks like; the run replays (shadow mode, or compare mode), decides
PASS, FAIL or INCONCLUSIVE (replay/verdict.py), prints the verdict and its reasons on stdout
(what cron mails), the replay's tables on stderr, keeps everything in a folder of its own
under `report`, and exits 0, 3 or 4. A lock keeps two runs of one config from overlapping
(a slow run and the next cron tick would double the load on production): the second one
says so and exits 1 without sending anything.

    name = "checkout"                   # names the run, its folders and its lock
    mode = "shadow"                     # or "compare"
    input = "/var/spool/shadowtap/"     # any replay address: file, spool, kafka://...
    report = "/var/lib/shadowtap/runs"  # a folder per run: NAME-YYYYMMDDTHHMMSSZ/

    [targets]                           # shadow: candidate, and baseline (production) to
    baseline = "http://10.0.0.1:8080"   # compare latency with; compare: primary, candidate
    candidate = "http://10.0.0.2:8080"  # and secondary (optional)

    [replay]                            # all optional
    rate = 200                          # requests/s (or speed = 1.0: the recorded timing)
    duration = "10m"
    limit = 100000
    max_inflight = 256
    timeout = 10                        # seconds per request
    allow_writes = false

    [kafka]                             # optional, for a kafka:// input
    group = "shadowtap-run"             # the consumer group (the default)
    from = "committed"                  # earliest, latest, committed, a time, or -15m
    until = "now"                       # optional end
    settings = { "security.protocol" = "ssl" }   # librdkafka settings

    [pass]                              # all optional, these are the defaults
    min_requests = 100
    max_error_rate = "1%"
    max_p99_ms = 250                    # off unless given
    max_p99_ratio = 1.5                 # off unless given (needs a baseline)
    max_dropped_rate = "1%"
    baseline_max_error_rate = "5%"
    max_diff_rate = "0%"                # compare mode
"""

from __future__ import annotations

import dataclasses
import fcntl
import math
import os
import sys
import tempfile
import time
import tomllib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from replay.html import format_html
from replay.options import CompareOptions, ReplayOptions, ShadowOptions, Target, parse_duration
from replay.report import format_table, write_report
from replay.schedule import Pacing
from replay.verdict import Criteria, Verdict, decide
from shadowtap.errors import ShadowtapError, UsageError
from shadowtap.stream import StreamOptions
from shadowtap.times import parse_time

MODES = {"shadow": ({"candidate"}, {"baseline"}), "compare": ({"primary", "candidate"}, {"secondary"})}
"""Each mode's required and optional target names."""
TOP_KEYS = {"name", "mode", "input", "report", "lock", "targets", "replay", "pass", "kafka"}
KAFKA_KEYS = {"group", "from", "until", "settings"}
REPLAY_KEYS = {"rate", "speed", "duration", "limit", "max_inflight", "timeout", "allow_writes"}
PASS_KEYS = {f.name for f in dataclasses.fields(Criteria)}
RATES = {"max_error_rate", "max_dropped_rate", "baseline_max_error_rate", "max_diff_rate"}
"""Criteria given as percentages (`"1%"`) or fractions (0.01)."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    """A parsed, checked config."""

    name: str
    mode: str
    input: str
    targets: dict[str, str]
    replay: ReplayOptions
    criteria: Criteria
    report: str | None = None
    lock: str | None = None
    stream: StreamOptions = field(default_factory=StreamOptions)
    """A kafka:// input's group, start, end and librdkafka settings."""


class ConfigError(UsageError):
    """A config that cannot be used: one sentence naming the file, the key and the value."""


def _check_keys(where: str, table: Any, allowed: set[str], path: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{path}: unknown key {where + '.' if where != 'top level' else ''}{unknown[0]!r} "
                          f"(known: {', '.join(sorted(allowed))})")
    return table


def _number(path: str, key: str, value: Any, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= minimum:
        raise ConfigError(f"{path}: {key} = {value!r} must be a number above {minimum:g}")
    return float(value)


def _rate(path: str, key: str, value: Any) -> float:
    """`"1%"` or 0.01 as a fraction from 0 to 1."""
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            fraction = float(value.strip()[:-1]) / 100
        except ValueError:
            fraction = -1.0
    elif isinstance(value, int | float) and not isinstance(value, bool):
        fraction = float(value)
    else:
        fraction = -1.0
    if not 0 <= fraction <= 1:
        raise ConfigError(f"{path}: {key} = {value!r} must be a percentage like \"1%\" or a fraction from 0 to 1")
    return fraction


def load_config(path: str) -> RunConfig:
    """Read and check a run config; ConfigError (exit 2) naming what is wrong."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the run config {path!r}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    _check_keys("top level", data, TOP_KEYS, path)
    for key in ("name", "input"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ConfigError(f"{path}: {key} is required (a non-empty string)")
    name = data["name"].strip()
    if not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"{path}: name = {name!r} may hold only letters, digits, '-', '_' and '.'")
    mode = data.get("mode", "shadow")
    if mode not in MODES:
        raise ConfigError(f"{path}: mode = {mode!r} must be one of {', '.join(MODES)}")
    required, optional = MODES[mode]
    targets = _check_keys("targets", data.get("targets", {}), required | optional, path)
    for key in sorted(required - set(targets)):
        raise ConfigError(f"{path}: targets.{key} is required in {mode} mode")
    for key, url in targets.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{path}: targets.{key} = {url!r} must be an http:// or https:// URL")
    return RunConfig(name, mode, data["input"], dict(targets), _replay_options(path, data.get("replay", {})),
                     _criteria(path, data.get("pass", {}), mode), _optional_str(path, data, "report"),
                     _optional_str(path, data, "lock"), _stream(path, data.get("kafka", {})))


def _stream(path: str, table: Any) -> StreamOptions:
    """The [kafka] table: group (default `shadowtap-run`), from, until, settings."""
    k = _check_keys("kafka", table, KAFKA_KEYS, path)
    for key in ("group", "from", "until"):
        if key in k and (not isinstance(k[key], str) or not k[key].strip()):
            raise ConfigError(f"{path}: kafka.{key} = {k[key]!r} must be a non-empty string")
    try:
        if k.get("from", "committed") not in ("earliest", "latest", "committed"):
            parse_time(k["from"], "kafka.from")
        if "until" in k:
            parse_time(k["until"], "kafka.until")
    except UsageError as e:
        raise ConfigError(f"{path}: {e.message}") from None
    settings = k.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(v, str | int | bool) for v in settings.values()):
        raise ConfigError(f"{path}: kafka.settings must be a table of librdkafka settings (key = \"value\")")
    pairs = tuple((key, str(v).lower() if isinstance(v, bool) else str(v)) for key, v in settings.items())
    return StreamOptions(settings=pairs, group=k.get("group", "shadowtap-run"), start=k.get("from", "committed"),
                         until=k.get("until"))


def _optional_str(path: str, data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{path}: {key} = {value!r} must be a path")
    return value


def _replay_options(path: str, table: Any) -> ReplayOptions:
    r = _check_keys("replay", table, REPLAY_KEYS, path)
    if "rate" in r and "speed" in r:
        raise ConfigError(f"{path}: replay.rate and replay.speed exclude each other: choose one")
    pacing = Pacing()
    if "rate" in r:
        pacing = Pacing(rate=_number(path, "replay.rate", r["rate"]))
    elif "speed" in r:
        pacing = Pacing(speed=_number(path, "replay.speed", r["speed"]))
    duration = None
    if "duration" in r:
        duration = parse_duration(str(r["duration"])) if not isinstance(r["duration"], bool) else None
        if duration is None:
            raise ConfigError(f"{path}: replay.duration = {r['duration']!r} must be a duration like \"10m\" or 600")
    limit = r.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"{path}: replay.limit = {limit!r} must be a whole number above 0")
    inflight = r.get("max_inflight", 256)
    if isinstance(inflight, bool) or not isinstance(inflight, int) or inflight < 1:
        raise ConfigError(f"{path}: replay.max_inflight = {inflight!r} must be a whole number above 0")
    allow_writes = r.get("allow_writes", False)
    if not isinstance(allow_writes, bool):
        raise ConfigError(f"{path}: replay.allow_writes = {allow_writes!r} must be true or false")
    timeout = _number(path, "replay.timeout", r["timeout"]) if "timeout" in r else 10.0
    return ReplayOptions(pacing=pacing, duration=duration, limit=limit, max_inflight=inflight, timeout=timeout,
                         allow_writes=allow_writes, progress=False)


def _criteria(path: str, table: Any, mode: str) -> Criteria:
    p = _check_keys("pass", table, PASS_KEYS, path)
    values: dict[str, Any] = {}
    for key, value in p.items():
        if key in RATES:
            values[key] = _rate(path, f"pass.{key}", value)
        elif key == "min_requests":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{path}: pass.min_requests = {value!r} must be a whole number, 0 or more")
            values[key] = value
        else:
            values[key] = _number(path, f"pass.{key}", value)
    if mode != "compare" and "max_diff_rate" in values:
        raise ConfigError(f"{path}: pass.max_diff_rate applies to compare mode only")
    return Criteria(**values)


@contextmanager
def run_lock(config: RunConfig):
    """Hold the run's lock; ShadowtapError when another run of the same name holds it."""
    path = config.lock or os.path.join(tempfile.gettempdir(), f"shadowtap-run-{config.name}.lock")
    try:
        f = open(path, "a+")
    except OSError as e:
        raise ShadowtapError(f"cannot open the run lock {path!r}: {e.strerror or e}") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ShadowtapError(f"another run named {config.name!r} is still going (lock {path} is held): "
                                 "not starting this one") from None
        yield


def describe(config: RunConfig) -> str:
    """What a checked config will do, for `shadowtap run --check`."""
    r = config.replay
    pacing = f"{r.pacing.rate:g} requests/s" if r.pacing.rate else f"the recorded timing x{r.pacing.speed:g}"
    limits = ", ".join(part for part in (f"for {r.duration:g} s" if r.duration else "",
                                         f"at most {r.limit} records" if r.limit else "") if part) or "to the end"
    skip = {"max_diff_rate"} if config.mode == "shadow" else set()
    if "baseline" not in config.targets and config.mode == "shadow":
        skip |= {"baseline_max_error_rate", "max_p99_ratio"}
    criteria = ", ".join(f"{k} {100 * v:g}%" if k in RATES else f"{k} {v:g}"
                         for k, v in dataclasses.asdict(config.criteria).items() if v is not None and k not in skip)
    targets = ", ".join(f"{k} {v}" for k, v in config.targets.items())
    source = config.input
    if source.startswith("kafka://"):
        st = config.stream
        source += f" (group {st.group}, from {st.start}{f', until {st.until}' if st.until else ''})"
    return (f"run {config.name}: {config.mode} mode, {source} to {targets}; {pacing}, {limits}; "
            f"{'writes too' if r.allow_writes else 'GET, HEAD and OPTIONS only'}; pass when {criteria}; "
            f"report {config.report or '(none)'}")


def _folder(config: RunConfig, started: float) -> Path | None:
    if config.report is None:
        return None
    folder = Path(config.report) / f"{config.name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(started))}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ShadowtapError(f"cannot create the run folder {str(folder)!r}: {e.strerror or e}") from None
    return folder


def _targets(config: RunConfig) -> tuple[Target, ...]:
    order = ("baseline", "candidate") if config.mode == "shadow" else ("primary", "secondary", "candidate")
    return tuple(Target(name, config.targets[name]) for name in order if name in config.targets)


async def run_main(path: str) -> int:
    """`shadowtap run`: the verdict on stdout, tables on stderr, the run folder; the exit code."""
    config = load_config(path)
    with run_lock(config):
        started = time.time()
        folder = _folder(config, started)
        captured: dict[str, Any] = {}
        summary = await _run_mode(config, captured, folder)
        interrupted = summary.interrupted is not None
        verdict = decide(captured["report"], config.criteria, "candidate",
                         "baseline" if config.mode == "shadow" and "baseline" in config.targets else
                         "primary" if config.mode == "compare" else None,
                         captured.get("diffs"), interrupted)
        _write_verdict(config, verdict, started, folder)
        _print_verdict(config, verdict, folder)
        if captured.get("diffs") is not None:
            from replay.diff import format_diffs

            print(format_diffs(captured["diffs"]), flush=True)
    return summary.exit_code if interrupted else verdict.exit_code


async def _run_mode(config: RunConfig, captured: dict[str, Any], folder: Path | None):
    """Run the mode, keeping its reports in `captured` (and in the run folder)."""
    def keep(report: dict[str, Any], diffs: dict[str, Any] | None = None) -> None:
        captured["report"], captured["diffs"] = report, diffs
        print(format_table(report), file=sys.stderr, flush=True)
        if folder is not None:
            write_report(str(folder / "report.json"), report)
            (folder / "report.html").write_text(format_html(report, f"shadowtap run {config.name}", diffs))
            if diffs is not None:
                (folder / "compare.json").write_bytes(orjson.dumps(diffs, option=orjson.OPT_INDENT_2) + b"\n")

    if config.mode == "shadow":
        from replay.shadow import shadow_run

        options = ShadowOptions(input=config.input, targets=_targets(config), replay=config.replay,
                                stream=config.stream)
        return await shadow_run(options, keep)
    from replay.compare import compare_run

    max_diff = config.criteria.max_diff_rate
    options = CompareOptions(input=config.input, targets=_targets(config), replay=config.replay, stream=config.stream,
                             max_diff_rate=0.0 if max_diff is None else max_diff)
    return await compare_run(options, keep)


def _write_verdict(config: RunConfig, verdict: Verdict, started: float, folder: Path | None) -> None:
    if folder is None:
        return
    record = {"name": config.name, "mode": config.mode, "verdict": verdict.status, "reasons": list(verdict.reasons),
              "measures": verdict.measures, "started": started, "ended": time.time(),
              "criteria": dataclasses.asdict(config.criteria), "targets": config.targets, "input": config.input}
    (folder / "verdict.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")


def _print_verdict(config: RunConfig, verdict: Verdict, folder: Path | None) -> None:
    lines = [f"shadowtap run {config.name}: {verdict.status}"]
    lines += [f"  - {reason}" for reason in verdict.reasons]
    parts = []
    for side in ("candidate", "baseline"):
        m = verdict.measures.get(side)
        if m:
            errors = "-" if m["error_rate"] is None else f"{100 * m['error_rate']:.2f}%"
            p99 = "-" if m["p99_ms"] is None else f"{m['p99_ms']:.1f} ms"
            parts.append(f"{side}: {m['requests']} requests, error rate {errors}, p99 {p99} (corrected)")
    parts.append(f"dropped {100 * verdict.measures['dropped_rate']:.2f}%")
    lines.append("  " + "; ".join(parts))
    if folder is not None:
        lines.append(f"  report: {folder}/")
    print("\n".join(lines), flush=True)
