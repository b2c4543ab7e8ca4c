"""`shadowtap capture pcap | sniff | gor`: option parsing only; the work is in capture.pcap,
capture.sniff and capture.gor."""

from __future__ import annotations

import click

from shadowtap.cli import run_async

_OUTPUT = click.option("-o", "--output", required=True, metavar="ADDR",
                       help="Where records go: '-', a JSONL file (.gz ok), a spool directory (trailing '/'), "
                            "kafka://HOST:PORT/TOPIC, or gor:PATH (a GoReplay file).")
_NO_SCRUB = click.option("--no-scrub", is_flag=True,
                         help="Keep secrets (Authorization, Cookie, Set-Cookie, token-like query parameters) "
                              "instead of replacing them; scrubbing is on by default.")


def _packet_options(f):
    for option in reversed([
        click.option("--port", "ports", type=click.IntRange(1, 65535), multiple=True, metavar="N",
                     help="Server port to read (repeatable). Default: every TCP connection whose client speaks "
                          "HTTP/1.x, found by content."),
        click.option("--max-body", type=click.IntRange(min=0), default=1 << 20, show_default=True, metavar="BYTES",
                     help="Body bytes kept per request and per response; longer bodies are kept up to this size "
                          "and the record says body_truncated and the real body_size."),
        click.option("--idle-timeout", type=click.FloatRange(min=0.001), default=120.0, show_default=True,
                     metavar="SECONDS", help="Capture time after which a silent connection is flushed (its "
                                             "unanswered requests are recorded as incomplete)."),
        click.option("--dead-letter", type=click.Path(dir_okay=False), metavar="PATH",
                     help="Append what could not become a record here as JSONL (source, frame, endpoints, "
                          "reason, sample)."),
        _NO_SCRUB,
        _OUTPUT,
    ]):
        f = option(f)
    return f


def _options(output, ports, max_body, idle_timeout, dead_letter, no_scrub):
    from capture.pcap import PacketCaptureOptions

    return PacketCaptureOptions(
        output=output, ports=frozenset(ports) or None, max_body=max_body, idle_timeout=idle_timeout,
        scrub=not no_scrub, dead_letter=dead_letter,
    )


@click.command("pcap")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@_packet_options
def pcap(files, output, ports, max_body, idle_timeout, dead_letter, no_scrub) -> int:
    """Read HTTP/1.x requests and their responses from pcap/pcapng files.

    Files are read in the order given as one capture (connections may continue from one
    file into the next, as with tcpdump -C/-G rotation); gzip-compressed files are fine.
    Each request becomes a record with its original response; ts is the time of the
    request's first packet, response.elapsed_ms the time from the request's last packet to
    the packet with the response's first byte.
    """
    from capture.pcap import capture_pcap

    return run_async(capture_pcap(tuple(files), _options(output, ports, max_body, idle_timeout, dead_letter,
                                                          no_scrub)))


@click.command("gor")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@_OUTPUT
@_NO_SCRUB
def gor(files, output, no_scrub) -> int:
    """Read GoReplay .gor files: requests (type 1) with their original responses (type 2).

    A request's response.elapsed_ms is the response's timestamp minus the request's
    timestamp plus latency (GoReplay's first-to-last packet span). FILE '-' is stdin; '.gz'
    files are decompressed. Replayed responses (type 3) are counted and skipped.
    """
    from capture.gor import capture_gor

    return run_async(capture_gor(tuple(files), output, scrub=not no_scrub))


@click.command("sniff")
@click.option("--iface", required=True, metavar="IF", help="Network interface to capture on (e.g. eth0, lo).")
@click.option("--bpf", metavar="EXPR", help="Kernel filter in tcpdump syntax, instead of the one --port gives "
                                            "(default: 'tcp').")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop after this many seconds.")
@click.option("--count", type=click.IntRange(min=1), metavar="N", help="Stop once N records were written.")
@_packet_options
def sniff(iface, bpf, duration, count, output, ports, max_body, idle_timeout, dead_letter, no_scrub) -> int:
    """Capture HTTP/1.x requests and their responses live from a network interface.

    Needs root or the CAP_NET_RAW capability. Runs until --duration, --count, SIGTERM or
    SIGINT (Ctrl-C), then writes what is still open and prints one summary line with the
    kernel's drops and its own (both should be 0).
    """
    from capture.sniff import SniffOptions, capture_sniff

    opts = SniffOptions(iface=iface, bpf=bpf, duration=duration, count=count,
                        packets=_options(output, ports, max_body, idle_timeout, dead_letter, no_scrub))
    return run_async(capture_sniff(opts))
