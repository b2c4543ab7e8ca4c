"""Click options shared by every command that opens stream addresses (`-X`, `--group`, ...)."""

from __future__ import annotations

from collections.abc import Callable

import click

from shadowtap.errors import UsageError
from shadowtap.stream import StreamOptions
from shadowtap.times import parse_time

_KEYWORDS = ("earliest", "latest", "committed")


def _check_time(text: str, option: str) -> None:
    try:
        parse_time(text, option)
    except UsageError as e:
        raise click.BadParameter(e.message) from None


def _settings(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"cannot parse -X {item!r}: expected key=value (a librdkafka setting)")
        pairs.append((key.strip(), value))
    return tuple(pairs)


def _start(_ctx: click.Context, _param: click.Parameter, text: str) -> str:
    if text not in _KEYWORDS:
        _check_time(text, "--from")
    return text


def _until(_ctx: click.Context, _param: click.Parameter, text: str | None) -> str | None:
    if text is not None:
        _check_time(text, "--until")
    return text


def kafka_source_options(func: Callable) -> Callable:
    """Add -X, --group, --from and --until (the Kafka side of a Source)."""
    options = [
        click.option("-X", "settings", multiple=True, callback=_settings, metavar="KEY=VALUE",
                     help="Kafka client setting passed to librdkafka (TLS, SASL, ...); repeatable."),
        click.option("--group", default="shadowtap-replay", show_default=True, metavar="NAME",
                     help="Kafka consumer group: processes in one group split the partitions."),
        click.option("--from", "start", default="committed", show_default=True, callback=_start,
                     metavar="WHERE", help="Kafka start: earliest, latest, committed (else earliest), "
                                           "a Unix/ISO time, or relative like -15m."),
        click.option("--until", callback=_until, metavar="TIME",
                     help="Kafka end: stop each partition at records produced after TIME (or 'now')."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def source_options(func: Callable) -> Callable:
    """Add the options of a stream Source: the Kafka ones and --follow."""
    follow = click.option("--follow", is_flag=True,
                          help="Keep reading as records arrive instead of stopping at the current end.")
    return kafka_source_options(follow(func))


def sink_options(func: Callable) -> Callable:
    """Add the options of a stream Sink (-X) as `settings`."""
    return click.option("-X", "settings", multiple=True, callback=_settings, metavar="KEY=VALUE",
                        help="Kafka client setting passed to librdkafka (acks, TLS, SASL, ...); repeatable.")(func)


def stream_options(settings=(), group="shadowtap-replay", start="committed", until=None, follow=False) -> StreamOptions:
    """The StreamOptions for parsed option values."""
    return StreamOptions(settings=tuple(settings), group=group, start=start, until=until, follow=follow)
