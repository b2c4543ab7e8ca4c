"""`capture gor`: GoReplay `.gor` files into a stream of records, scrubbed like every capture.

Type 1 records (requests) become records, with the type 2 record of the same ID as their
original response; everything else is counted by reason in the summary line.
"""

from __future__ import annotations

import sys
from collections import Counter

from shadowtap.errors import EXIT_ERROR, EXIT_OK, StreamError
from shadowtap.streams import open_sink
from shadowtap.streams.gor import GorSource

FLUSH_EVERY = 4096


async def capture_gor(paths: tuple[str, ...], output: str, scrub: bool = True) -> int:
    """Ship every request of every file into `output`; one summary line on stderr."""
    transform = None
    if scrub:
        from capture.scrub import scrub as transform
    sink = open_sink(output)
    read = records = 0
    skipped: Counter[str] = Counter()
    failed = False
    try:
        for path in paths:
            try:
                source = GorSource(path)
                for record in source.records():
                    if transform is not None:
                        record = transform(record)
                    await sink.send(record)
                    records += 1
                    if records % FLUSH_EVERY == 0:
                        await sink.flush()
            except StreamError as e:
                failed = True
                print(f"shadowtap: error: {e.message}", file=sys.stderr)
                continue
            read += source.read
            skipped.update(source.skipped)
    finally:
        await sink.close()
    detail = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    print(f"shadowtap capture gor: {read} gor records read, {records} records written; "
          f"skipped: {sum(skipped.values())}" + (f" ({detail})" if detail else ""), file=sys.stderr)
    return EXIT_ERROR if failed else EXIT_OK
