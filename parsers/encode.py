"""The capture fast path's contract: log line bytes straight to v1 JSON lines, no Record.

Why: building a frozen Record per line and encoding it costs more than parsing the line; a
shipper that only writes JSON lines does not need the Record. A parser's `fast_encoder(...)`
returns a `LineEncoder`: `encode(lines, offset, fallback)` gives the JSON lines for a chunk of
log lines, handing each line it does not take to `fallback`, the general path (`parse` →
Record → transforms → `encode_record`), which decides (record, skip or dead letter) and keeps
the order.

An encoder takes only the common case: lines whose values can be copied into JSON strings
verbatim (printable ASCII, no quote, no backslash, nothing escaped by the server). It matches
a second, strict regex of its format whose groups admit only such bytes (and only plain
numbers where the Record wants numbers), so a match is the whole check. Scrubbing happens
inside the encoder, with the same rules object the general path uses. What it returns must
decode to exactly what the general path writes for the same line (tests/capture/
test_fast_path.py checks this on every real sample file and on lines built to be awkward).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Fallback = Callable[[int, bytes, int], "bytes | None"]
"""fallback(index in the chunk, line, byte offset) -> the general path's JSON line, or None
(the line was a skip or a dead letter)."""
LineEncoder = Callable[[list[bytes], int, Fallback], list[bytes]]
"""encode(lines without newlines, byte offset of the first, fallback) -> their JSON lines."""


class ScrubRules(Protocol):
    """What an encoder needs from capture.scrub.Scrubber (parsers do not import capture)."""

    targets: dict[bytes, bytes]
    """A cache of `target` results, looked up before calling it."""

    def target(self, raw: bytes) -> bytes:
        """A request target with secret query parameters replaced."""

    def header(self, name: str) -> Callable[[bytes], bytes] | None:
        """How to scrub the value of header `name`, or None."""

    def field(self, key: str) -> Callable[[bytes], bytes] | None:
        """How to scrub the logged field `key`, or None."""


# Regex character classes (bodies, for `[...]`) of the bytes a JSON string can hold as they
# are: printable ASCII without `"` and `\`, with and without the space. An encoder's own regex
# builds its value groups from these, so a match guarantees that every value can be copied.
SAFE = rb"\x20\x21\x23-\x5b\x5d-\x7e"
SAFE_WORD = rb"\x21\x23-\x5b\x5d-\x7e"
TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
"""An HTTP method (RFC 9110 token)."""
FAST_REQUEST = rb"(" + TOKEN + rb") ([" + SAFE_WORD + rb"]+) (HTTP/\d+(?:\.\d+)?)"
"""A request line as three groups (method, target, version) that need no further checks."""


class Codegen:
    """Builds one specialised `encode(lines, offset, fallback)` function for a format.

    A format's fast path is the same few steps for every line; written out for one format (its
    group numbers, its constants), inside the loop over a chunk's lines and with every constant
    bound to a local variable, they run about twice as fast as a generic loop over a plan.

    The body is written with `line` for the statements run per line (`line`, `offset` and
    `index` are in scope) and `bail` where the general path must take the line; the output of
    a line is the concatenation of `lit` constants and `var` expressions. The generated source
    holds only identifiers, group numbers and fixed code: every constant that comes from the
    format, the file name or the scrub rules (`const`) is passed in a tuple, never spliced
    into the source. `source` keeps the text for debugging.
    """

    def __init__(self) -> None:
        self.constants: list[object] = []
        self.body: list[str] = []
        self.parts: list[tuple[bool, object]] = []
        self.source = ""

    def const(self, value: object) -> str:
        """A local name for `value` in the generated function."""
        self.constants.append(value)
        return f"K{len(self.constants) - 1}"

    def line(self, text: str, depth: int = 0) -> None:
        """One statement of the per-line body, `depth` levels inside it."""
        self.body.append("    " * depth + text)

    def bail(self, depth: int) -> None:
        """Hand the line to the general path (`fallback`) and go on with the next one."""
        for text in ("encoded = fallback(index, line, offset)", "if encoded is not None:",
                     "    append(encoded)", "offset += len(line) + 1", "continue"):
            self.line(text, depth)

    def lit(self, data: bytes) -> None:
        """Constant bytes of the output."""
        if self.parts and self.parts[-1][0]:
            self.parts[-1] = (True, self.parts[-1][1] + data)
        else:
            self.parts.append((True, data))

    def var(self, expression: str) -> None:
        """An expression (of bytes) in the output."""
        self.parts.append((False, expression))

    def build(self, label: str) -> LineEncoder:
        """The function: the loop over the lines, the body, then the line's output."""
        pieces = [self.const(value) if is_const else value for is_const, value in self.parts]
        names = [f"K{k}" for k in range(len(self.constants))]
        self.source = "\n".join([
            "def encode(lines, offset, fallback):",
            f"    {', '.join(names)}, = CONSTANTS",
            "    out = []",
            "    append = out.append",
            "    for index, line in enumerate(lines):",
            *(f"        {text}" for text in self.body),
            f"        append(b''.join(({', '.join(pieces)},)))",
            "        offset += len(line) + 1",
            "    return out",
        ])
        code = compile(self.source, f"<shadowtap fast encoder: {label}>", "exec")
        scope: dict[str, object] = {"CONSTANTS": tuple(self.constants)}
        exec(code, scope)  # the source holds no user text: see the class docstring
        encode = scope["encode"]
        encode.source = self.source
        return encode
