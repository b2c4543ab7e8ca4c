"""One shallow error hierarchy: every expected failure carries a message and an exit code."""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_VERDICT = 3
EXIT_INCONCLUSIVE = 4
EXIT_INTERRUPTED = 130


class ShadowtapError(Exception):
    """An expected failure: printed as one sentence, no traceback."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(ShadowtapError):
    """A wrong option value or an unusable combination of options."""

    exit_code = EXIT_USAGE


class FormatError(UsageError):
    """A log format string (nginx log_format, ...) that cannot be compiled."""


class InputError(ShadowtapError):
    """An input that cannot be read at all (missing file, permission denied)."""


class StreamError(ShadowtapError):
    """A stream address or adapter failed (open, read, write)."""


class RecordError(StreamError):
    """A stream item that is not a usable record (bad JSON, wrong types)."""


class VersionError(RecordError):
    """A record written by a newer shadowtap than this one."""


class ParseError(ShadowtapError):
    """One input line or packet that cannot be parsed: counted and dead-lettered, never fatal.

    `reason` is a short stable code used as the counter key (`no_match`, `bad_request_line`, ...);
    the message says what exactly was wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SkipLine(ParseError):
    """A well-formed input line that holds no HTTP request (a tcplog line, a connection notice,
    `<BADREQ>`): counted as a skip by `reason`, never a dead letter."""
