"""The `shadowtap` command: a click group that mounts the capture and replay CLIs lazily.

Subcommand modules are imported only when used, so `shadowtap --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from shadowtap import __version__
from shadowtap.errors import EXIT_INTERRUPTED, EXIT_USAGE, ShadowtapError

LAZY_COMMANDS = {
    "capture": ("capture.cli", "capture", "Capture traffic from logs or packets into a stream of records."),
    "replay": ("replay.cli", "replay", "Replay a stream of records against targets (shadow, ...)."),
    "cat": ("shadowtap.catcmd", "cat", "Copy records between any two addresses."),
    "topic": ("shadowtap.topiccmd", "topic", "Create and describe Kafka topics (partitions, offsets, lag)."),
    "report": ("shadowtap.reportcmd", "report", "Build a report from outcome files (merging several runs or workers)."),
    "run": ("replay.runcmd", "run", "One scheduled dark-traffic run from a config file, ending in a verdict."),
}


class LazyGroup(click.Group):
    """A group whose subcommands live in other modules, imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr, _ = self.lazy[name]
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = {name: help_text for name, (_, _, help_text) in self.lazy.items()}
        for name in super().list_commands(ctx):
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows[name] = command.get_short_help_str(limit=80)
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows.items()))


@click.group(
    cls=LazyGroup,
    lazy=LAZY_COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="shadowtap")
@click.option("--traceback", is_flag=True, help="Show Python tracebacks for expected errors too.")
@click.pass_context
def cli(ctx: click.Context, traceback: bool) -> None:
    """Capture real HTTP traffic where it already leaves a trace and replay it safely.

    Addresses (-i/-o): '-' is stdin/stdout JSON Lines; a PATH is a JSON Lines file ('.gz'
    compressed when named so); a directory or a PATH ending in '/' is a spool of size-rotated
    segments.

    Exit codes: 0 ok, 1 error, 2 usage, 3 verdict failed, 4 verdict inconclusive, 130 interrupted.
    """
    ctx.ensure_object(dict)
    ctx.obj["traceback"] = traceback


def run_async(coro):
    """Run a coroutine to completion on a fresh event loop (uvloop when installed)."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one sentence on stderr and the right exit code for every expected failure."""
    args = sys.argv[1:] if argv is None else argv
    show_traceback = "--traceback" in args
    try:
        code = cli.main(args=args, prog_name="shadowtap", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e), err=True)
        sys.exit(EXIT_USAGE)
    except click.UsageError as e:
        message = e.format_message()
        click.echo(f"shadowtap: error: {message[:1].lower()}{message[1:]}", err=True)
        hint = f"Try '{e.ctx.command_path} --help'." if e.ctx else "Try 'shadowtap --help'."
        click.echo(hint, err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except ShadowtapError as e:
        if show_traceback:
            raise
        click.echo(f"shadowtap: error: {e.message}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("shadowtap: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
