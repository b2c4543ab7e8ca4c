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

Fallback = Callable[[int, bytes, int], object]
"""fallback(index in the chunk, line, byte offset) -> what the general path made of the line
(its JSON line, or its Record when the caller selects records afterwards), put in the output
in the line's place, or None (the line was a skip or a dead letter)."""
LineEncoder = Callable[[list[bytes], int, Fallback], list]
"""encode(lines without newlines, byte offset of the first, fallback) -> their JSON lines (and
what the fallback gave for the lines it took)."""


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


TEMPLATES_MAX = 1024
"""Output templates an encoder keeps (one per shape met)."""
Part = tuple
"""A piece of an encoder's output, tagged by its kind: `lit` (constant bytes), `var` (an
expression of bytes), `offset`, and `choice` and `listing` (made by Codegen)."""


def lit(data: bytes) -> Part:
    """Constant bytes of the output."""
    return ("lit", data)


def var(expression: str) -> Part:
    """An expression (of bytes) in the output."""
    return ("var", expression)


class Codegen:
    """Builds one specialised `encode(lines, offset, fallback)` function for a format.

    A format's fast path is the same few steps for every line; written out for one format (its
    group numbers, its constants), inside the loop over a chunk's lines and with every constant
    bound to a local variable, they run about twice as fast as a generic loop over a plan.

    The body is written with `line` for the statements run per line (`line`, `offset` and
    `index` are in scope) and `bail` where the general path must take the line. The output of
    a line is the sequence of `lit` constants, `var` expressions, `choice`s between two such
    sequences (a value or `null`) and `listing`s (items present or left out, comma-separated).

    The output is formatted with one `bytes % tuple` per line: the constants and the quotes
    around values are in a template, and each combination of choices ("shape") has its own
    template, made on first use. Every `var` of both sides of a choice is always an argument;
    the side not taken formats it as `%.0s` (nothing). So a line allocates its output and no
    intermediate pieces: for a HAProxy record of thirty values this takes about a third less
    time than concatenating quotes onto the values and joining sixty pieces.

    The generated source holds only identifiers, group numbers and fixed code: every constant
    that comes from the format, the file name or the scrub rules (`const`) is passed in a
    tuple, never spliced into the source. `source` keeps the text for debugging.
    """

    def __init__(self) -> None:
        self.constants: list[object] = []
        self.setup: list[str] = []
        self.body: list[str] = []
        self.parts: list[tuple] = []
        self.conditions: list[str] = []
        self.source = ""
        self._targets: str | None = None

    def const(self, value: object) -> str:
        """A local name for `value` in the generated function."""
        self.constants.append(value)
        return f"K{len(self.constants) - 1}"

    def before(self, text: str) -> None:
        """A statement run once per chunk, before the loop over its lines."""
        self.setup.append(text)

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
        self.parts.append(lit(data))

    def var(self, expression: str) -> None:
        """An expression (of bytes) in the output."""
        self.parts.append(var(expression))

    def offset(self) -> None:
        """The line's byte offset, as digits (always shown: not for a side of a choice)."""
        self.parts.append(("offset",))

    def scrubbed(self, expression: str, scrub: Callable[[bytes], bytes] | None, rules: ScrubRules | None) -> str:
        """`expression` passed through `scrub` (None: as it is). The target scrubber goes through
        the rules' cache, and only for a target that has a query at all."""
        if scrub is None:
            return expression
        if rules is not None and scrub == rules.target:
            e = expression
            return f"(({self._target_cache(rules)}.get({e}) or {self.const(scrub)}({e})) if b'?' in {e} else {e})"
        return f"{self.const(scrub)}({expression})"

    def scrub_target(self, target: str, rules: ScrubRules) -> None:
        """Statements replacing the request target (a variable) by its scrubbed form."""
        self.line(f"if b'?' in {target}:")
        self.line(f"    {target} = {self._target_cache(rules)}.get({target}) or {self.const(rules.target)}({target})")

    def _target_cache(self, rules: ScrubRules) -> str:
        if self._targets is None:
            self._targets = self.const(rules.targets)
        return self._targets

    def request_line(self, method: str, target: str, version: str) -> None:
        """The record's `method`, `target` and `version` (expressions), up to the `host` key."""
        self.lit(b',"method":"')
        self.var(method)
        self.lit(b'","target":"')
        self.var(target)
        self.lit(b'","version":"')
        self.var(version)
        self.lit(b'","host":')

    def emit(self, part: Part) -> None:
        """A part made by `choice` or `listing`, next in the output."""
        self.parts.append(part)

    def condition(self, expression: str) -> int:
        """The position of a condition in the shape (the same expression is computed once)."""
        if expression not in self.conditions:
            self.conditions.append(expression)
        return self.conditions.index(expression)

    def choice(self, condition: str, when_true: list[Part], when_false: list[Part]) -> Part:
        """`when_true` where `condition` (an expression) holds for the line, else `when_false`."""
        return ("choice", self.condition(condition), when_true, when_false)

    def listing(self, items: list[tuple[str, list[Part]]]) -> Part:
        """Items of a JSON list, each left out where its condition holds, separated by commas."""
        return ("listing", [(self.condition(absent), parts) for absent, parts in items])

    def _arguments(self, parts: list[tuple]) -> list[str]:
        """The expressions the template takes, in order: every `var`, on both sides of choices."""
        out: list[str] = []
        for part in parts:
            if part[0] == "var":
                out.append(part[1])
            elif part[0] == "offset":
                out.append("offset")
            elif part[0] == "choice":
                out += self._arguments(part[2]) + self._arguments(part[3])
            elif part[0] == "listing":
                for _, entry in part[1]:
                    out += self._arguments(entry)
        return out

    def template(self, shape: tuple[bool, ...]) -> bytes:
        """The output template of one shape (the values of the conditions, in order)."""
        return b"".join(self._render(self.parts, shape, True))

    def _render(self, parts: list[tuple], shape: tuple[bool, ...], shown: bool) -> list[bytes]:
        out: list[bytes] = []
        for part in parts:
            kind = part[0]
            if kind == "lit":
                out.append(part[1].replace(b"%", b"%%") if shown else b"")
            elif kind == "var":
                out.append(b"%s" if shown else b"%.0s")
            elif kind == "offset":
                out.append(b"%d")
            elif kind == "choice":
                taken = shape[part[1]]
                out += self._render(part[2], shape, shown and taken)
                out += self._render(part[3], shape, shown and not taken)
            else:
                present = 0
                for bit, entry in part[1]:
                    keep = shown and not shape[bit]
                    if keep and present:
                        out.append(b",")
                    present += keep
                    out += self._render(entry, shape, keep)
        return out

    def build(self, label: str) -> LineEncoder:
        """The function: the loop over the lines, the body, then the line's output."""
        arguments = self._arguments(self.parts)
        values = f"({', '.join(arguments)},)"
        if self.conditions:
            templates: dict[tuple[bool, ...], bytes] = {}

            def make(shape: tuple[bool, ...]) -> bytes:
                if len(templates) >= TEMPLATES_MAX:  # a log meets a few shapes; garbage must not grow it
                    templates.clear()
                templates[shape] = self.template(shape)
                return templates[shape]

            known, make_name = self.const(templates), self.const(make)
            shape = f"({', '.join(self.conditions)},)"
            output = [f"shape = {shape}",
                      f"append(({known}.get(shape) or {make_name}(shape)) % {values})"]
        else:
            output = [f"append({self.const(self.template(()))} % {values})"]
        names = [f"K{k}" for k in range(len(self.constants))]
        self.source = "\n".join([
            "def encode(lines, offset, fallback):",
            f"    {', '.join(names)}, = CONSTANTS",
            "    out = []",
            "    append = out.append",
            *(f"    {text}" for text in self.setup),
            "    for index, line in enumerate(lines):",
            *(f"        {text}" for text in self.body),
            *(f"        {text}" for text in output),
            "        offset += len(line) + 1",
            "    return out",
        ])
        code = compile(self.source, f"<shadowtap fast encoder: {label}>", "exec")
        scope: dict[str, object] = {"CONSTANTS": tuple(self.constants)}
        exec(code, scope)  # the source holds no user text: see the class docstring
        encode = scope["encode"]
        encode.source = self.source
        return encode
