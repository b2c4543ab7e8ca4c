"""`replay shadow --workers N`: N processes in one Kafka consumer group, one merged report.

The parent starts N worker processes ("spawn"), each running `shadow_main` on its own event
loop with its own outcome file; Kafka's group protocol splits the topic's partitions between
them, and a dead worker's partitions move to the others. The parent forwards SIGINT/SIGTERM,
waits for every worker, then builds one report from all outcome files (histograms merged,
never averaged), writes `--report` and `--outcomes` (the worker files concatenated; a kafka://
`--outcomes` is written by the workers themselves, as they go) and prints the table. A worker
that failed makes the run fail, naming it and its exit code.

Start positions: before any worker starts, `--from earliest|latest|TIME` is committed as the
group's offset of every partition and the workers start from the committed offsets, so a
partition moved by a rebalance resumes where the group got to instead of at the start again
(at-least-once: what a dead worker had in flight, or finished after its last commit, is
replayed again by the new owner).

Rates: `--rate`, `--ramp` and `--stages` are the group's total. Every worker is given the
whole profile and paces the share of it that its assigned partitions are of the topic's
(`KafkaSource.rate_share`, `Schedule.set_share`), following every rebalance; other hosts
running the same command in the same group split it the same way.

Stated gaps: `--limit` and `--duration` apply per worker. With `--from TIME` the
records of a batch that starts before TIME are replayed too (the single-process run skips
them). The merged report holds what outcomes tell: planned, dropped and skipped requests are
counted by the workers only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from typing import Any

from replay.options import ShadowOptions
from shadowtap.errors import EXIT_ERROR, EXIT_INTERRUPTED, ShadowtapError, UsageError

KAFKA_SCHEME = "kafka://"


def worker_options(options: ShadowOptions, seed_offset: int = 0) -> ShadowOptions:
    """What one worker runs: the group's pacing (it takes its share by its partitions), its own
    Poisson seed, no report; outcomes only when they go to Kafka (each worker produces its
    own; files are the parent's to write)."""
    pacing = options.replay.pacing
    pacing = dataclasses.replace(pacing, seed=pacing.seed + seed_offset)
    replay = dataclasses.replace(options.replay, pacing=pacing, progress=False, handle_signals=True)
    outcomes = options.outcomes if _to_kafka(options.outcomes) else None
    return dataclasses.replace(options, replay=replay, outcomes=outcomes, report=None)


def _to_kafka(address: str | None) -> bool:
    return address is not None and address.startswith(KAFKA_SCHEME)


def _worker(options: ShadowOptions, outcome_file: str) -> None:
    """A worker process: run shadow_main, its outcomes also into `outcome_file` (for the merged
    report), its summary table kept off the parent's stdout."""
    from replay.observe import OutcomeWriter
    from replay.shadow import shadow_main
    from shadowtap.cli import run_async

    os.setpgrp()  # a terminal's Ctrl-C reaches the parent only, which forwards it once
    try:
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            code = run_async(shadow_main(options, [OutcomeWriter(outcome_file)]))
    except ShadowtapError as e:
        print(f"shadowtap: error: {e.message}", file=sys.stderr, flush=True)
        code = e.exit_code
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else 0)


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    if code == EXIT_INTERRUPTED:
        return f"was interrupted (exit code {code})"
    return f"failed with exit code {code}"


def workers_main(options: ShadowOptions, workers: int) -> int:
    """Run `options` in `workers` processes of one consumer group; returns the exit code."""
    from replay.offline import report_from_outcomes
    from replay.report import format_table, write_report
    from replay.shadow import check_writable

    if workers < 1:
        raise UsageError(f"cannot use --workers {workers}: expected a number of processes of 1 or more")
    if not options.input.startswith(KAFKA_SCHEME):
        raise UsageError(f"--workers needs a kafka:// input, not {options.input!r}: only a consumer group "
                         f"can split the records between processes")
    check_writable(options.report, "the report")
    if _to_kafka(options.outcomes):
        from shadowtap.streams.kafka import parse_address

        parse_address(options.outcomes)
    else:
        check_writable(options.outcomes, "the outcomes")
    stream = options.stream
    if stream.start != "committed":
        from shadowtap.streams.kafka_admin import commit_group_start

        commit_group_start(options.input, stream.group, stream.start, stream.settings)
        stream = dataclasses.replace(stream, start="committed")
    options = dataclasses.replace(options, stream=stream)

    tmp = tempfile.mkdtemp(prefix="shadowtap-workers-")
    files = [os.path.join(tmp, f"worker-{k}.jsonl") for k in range(1, workers + 1)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(worker_options(options, k), path),
                         name=f"shadowtap-worker-{k}", daemon=False)
             for k, path in enumerate(files, 1)]

    def forward(sig: int, _frame: Any) -> None:
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for k, p in enumerate(procs, 1):
            p.start()
            print(f"shadowtap: worker {k} pid {p.pid}", file=sys.stderr, flush=True)
        for p in procs:
            p.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    try:
        return _finish(options, procs, files, report_from_outcomes, format_table, write_report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finish(options: ShadowOptions, procs: list[Any], files: list[str], report_from_outcomes: Any,
            format_table: Any, write_report: Any) -> int:
    """Merge the workers' outcomes into one report and outcome file; name the failed workers."""
    present = [f for f in files if os.path.exists(f)]
    report = report_from_outcomes(present)
    counts = {f["path"]: f["outcomes"] for f in report["input"]["files"]}
    for k, path in enumerate(files, 1):
        print(f"shadowtap: worker {k}: {counts.get(path, 0)} outcomes", file=sys.stderr, flush=True)
    report["input"]["files"] = [{**f, "path": f"worker-{k}"} for k, f in enumerate(report["input"]["files"], 1)]
    report["workers"] = [{"worker": k, "pid": p.pid, "exit_code": p.exitcode} for k, p in enumerate(procs, 1)]
    if options.outcomes and not _to_kafka(options.outcomes):
        out = sys.stdout.buffer if options.outcomes == "-" else open(options.outcomes, "wb")
        try:
            for path in present:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, out)
            out.flush()
        finally:
            if out is not sys.stdout.buffer:
                out.close()
    if options.report:
        write_report(options.report, report)
    to_stdout = "-" in (options.report, options.outcomes)
    print(format_table(report), file=sys.stderr if to_stdout else sys.stdout, flush=True)
    failed = [(k, p) for k, p in enumerate(procs, 1) if p.exitcode != 0]
    for k, p in failed:
        print(f"shadowtap: worker {k} (pid {p.pid}) {_describe_exit(p.exitcode)}", file=sys.stderr, flush=True)
    if not failed:
        return 0
    codes = {p.exitcode for _, p in failed}
    if codes == {EXIT_INTERRUPTED}:
        return EXIT_INTERRUPTED
    return next((c for c in codes if c is not None and c > 0 and c != EXIT_INTERRUPTED), EXIT_ERROR)
