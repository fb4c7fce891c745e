"""The tokenizer of the KPI expression language: an allow-list of characters and tokens.

Everything SQL could use to escape an expression (`;`, comments, double-quoted identifiers, casts,
NUL) is refused here, before any grammar sees the text, with the position and the reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["MAX_EXPRESSION_LENGTH", "ExpressionError", "Token", "tokenize"]

# Guards against pathological input (a YAML typo or a hostile catalog): long texts are never
# legitimate KPI expressions.
MAX_EXPRESSION_LENGTH = 10_000


class ExpressionError(ValueError):
    """An expression was refused; ``position`` is the 0-based character offset of the problem."""

    expression: str
    position: int
    reason: str

    def __init__(self, expression: str, position: int, reason: str) -> None:
        # Passing every field to ValueError keeps the exception picklable (BaseException.__reduce__
        # rebuilds it from args), which matters when Dagster ships errors across processes.
        super().__init__(expression, position, reason)
        self.expression = expression
        self.position = position
        self.reason = reason

    def __str__(self) -> str:
        # Catalog expressions may be multi-line YAML scalars: show only the offending line so the
        # caret lines up.
        text = self.expression
        line_start = text.rfind("\n", 0, self.position) + 1
        line_end = text.find("\n", self.position)
        if line_end == -1:
            line_end = len(text)
        line = re.sub(r"[\t\r\f\v\x00]", " ", text[line_start:line_end])
        caret = " " * (self.position - line_start) + "^"
        return f"at position {self.position}: {self.reason}\n  {line}\n  {caret}"


TokenKind = Literal["number", "string", "name", "op", "end"]


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # source text; for strings the decoded value
    pos: int
    end: int

    @property
    def word(self) -> str:
        return self.text.lower() if self.kind == "name" else ""

    def describe(self) -> str:
        if self.kind == "end":
            return "end of expression"
        if self.kind == "string":
            return "string '" + self.text.replace("'", "''") + "'"
        if self.kind == "number":
            return f"number {self.text}"
        return f"'{self.text}'"


# ASCII only on purpose: str.isdigit()/isalpha() would admit look-alike Unicode characters.
_NUMBER_RE = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NAME_CHAR_RE = re.compile(r"[A-Za-z0-9_.]")
_OPERATORS = ("<=", ">=", "<>", "!=", "(", ")", ",", "+", "-", "*", "/", "=", "<", ">")
_WHITESPACE = " \t\r\n"


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            text,
            MAX_EXPRESSION_LENGTH,
            f"expression is too long (more than {MAX_EXPRESSION_LENGTH} characters)",
        )
    nul = text.find("\x00")
    if nul >= 0:
        # PostgreSQL text cannot hold NUL: refused here rather than when the query runs.
        raise ExpressionError(text, nul, "a NUL character (\\x00) is not allowed in an expression")
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
        elif text.startswith("--", i):
            raise ExpressionError(text, i, "SQL comments ('--') are not allowed")
        elif text.startswith("/*", i):
            raise ExpressionError(text, i, "SQL comments ('/* */') are not allowed")
        elif text.startswith("::", i):
            raise ExpressionError(
                text, i, "casts ('::') are not allowed; column types come from the catalog"
            )
        elif ch == ";":
            raise ExpressionError(
                text, i, "';' is not allowed: an expression is a single value, not SQL statements"
            )
        elif ch == '"':
            raise ExpressionError(
                text,
                i,
                "double-quoted identifiers are not allowed; write column names without quotes "
                "and string values in single quotes",
            )
        elif ch == "'":
            value, end = _read_string(text, i)
            tokens.append(Token("string", value, i, end))
            i = end
        elif number := _NUMBER_RE.match(text, i):
            end = number.end()
            if end < len(text) and _NAME_CHAR_RE.match(text, end):
                raise ExpressionError(text, i, f"malformed number '{text[i : end + 1]}'")
            tokens.append(Token("number", number.group(), i, end))
            i = end
        elif name := _NAME_RE.match(text, i):
            tokens.append(Token("name", name.group(), i, name.end()))
            i = name.end()
        elif text.startswith("==", i):
            raise ExpressionError(text, i, "use '=' for equality, not '=='")
        else:
            op = next((op for op in _OPERATORS if text.startswith(op, i)), None)
            if op is None:
                raise ExpressionError(text, i, f"unexpected character {ch!r}")
            tokens.append(Token("op", op, i, i + len(op)))
            i += len(op)
    tokens.append(Token("end", "", len(text), len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Decode a single-quoted literal starting at ``start``; ``''`` is an escaped quote."""
    parts: list[str] = []
    i = start + 1
    while True:
        close = text.find("'", i)
        if close == -1:
            raise ExpressionError(text, start, "unterminated string literal")
        parts.append(text[i:close])
        if text.startswith("''", close):
            parts.append("'")
            i = close + 2
        else:
            return "".join(parts), close + 1
