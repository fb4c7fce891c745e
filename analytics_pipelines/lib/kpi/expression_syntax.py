"""The grammar of the KPI expression language, read by lark (LALR), and its syntax errors.

The grammar below is the whole allow-list of shapes an expression may take; what a name may be
(a catalog column, a KPI, an aggregate function) and which types combine is checked afterwards
on the tree (`expressions`). Tokens come from `expression_tokens`, whose allow-list of characters
refuses `;`, comments, casts, quotes and NUL before lark sees anything; SQL keywords are refused
here, before parsing, so that `select` or `union` never reach the grammar at all.

A syntax error is reported like every other refusal: the position and a reason in the words of
this language (`missing ')' to close the '(' at position 3`), not in lark's terminal names.
"""

from __future__ import annotations

from collections.abc import Iterator

from lark import Lark, Token, Tree, UnexpectedToken
from lark.lexer import Lexer

from analytics_pipelines.lib.kpi.expression_tokens import ExpressionError
from analytics_pipelines.lib.kpi.expression_tokens import Token as SourceToken

__all__ = ["GRAMMAR", "parse_tree"]

GRAMMAR = r"""
measure: expr
filter: condition
derived: expr

// Arithmetic: + - over * / over unary minus; a chain of one level is one flat node.
?expr: term ((PLUS | MINUS) term)*
?term: unary ((STAR | SLASH) unary)*
?unary: primary
      | MINUS unary                    -> negate
?primary: NUMBER                       -> number
        | NAME                         -> reference
        | LPAR expr RPAR               -> group
        | call
        | call WHERE condition         -> conditional
call: NAME LPAR [arguments] RPAR
arguments: argument (COMMA argument)*
?argument: expr
         | STAR                        -> star

// Conditions (a KPI's filter, an aggregate's where): or over and over not.
?condition: conjunction (_OR conjunction)*
?conjunction: negation (_AND negation)*
?negation: predicate
         | NOT negation                -> negation
predicate: LPAR condition RPAR        -> condition_group
         | operand CMP operand         -> comparison
         | operand [NOT] IN LPAR [operands] RPAR -> in_list
         | operand IS [NOT] NULL       -> is_null
         | operand                     -> bare
operands: operand (COMMA operand)*
operand: NAME                          -> column
       | [MINUS] NUMBER                -> number_literal
       | STRING                        -> string_literal
       | TRUE                          -> boolean_literal
       | FALSE                         -> boolean_literal
       | NULL                          -> null_literal
       | call                          -> call_operand

%declare NUMBER STRING NAME PLUS MINUS STAR SLASH LPAR RPAR COMMA CMP WHERE _OR _AND NOT IN IS NULL TRUE FALSE
"""

_OPERATOR_TERMINALS = {
    "+": "PLUS",
    "-": "MINUS",
    "*": "STAR",
    "/": "SLASH",
    "(": "LPAR",
    ")": "RPAR",
    ",": "COMMA",
}
_COMPARISONS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">="})
_KEYWORD_TERMINALS = {
    "and": "_AND",
    "or": "_OR",
    "not": "NOT",
    "in": "IN",
    "is": "IS",
    "null": "NULL",
    "true": "TRUE",
    "false": "FALSE",
    "where": "WHERE",
}

# SQL keywords refused outright even if a catalog column happens to carry the name: they are the
# vocabulary of injection attempts (sub-selects, statements, casts) and never needed here.
RESERVED_WORDS = frozenset(
    {
        "all",
        "alter",
        "any",
        "as",
        "between",
        "by",
        "call",
        "case",
        "cast",
        "copy",
        "create",
        "delete",
        "distinct",
        "drop",
        "else",
        "end",
        "except",
        "exec",
        "execute",
        "exists",
        "from",
        "grant",
        "group",
        "having",
        "ilike",
        "insert",
        "intersect",
        "into",
        "join",
        "like",
        "limit",
        "offset",
        "order",
        "returning",
        "revoke",
        "select",
        "similar",
        "table",
        "then",
        "truncate",
        "union",
        "update",
        "values",
        "when",
        "with",
    }
)
_RESERVED_HINTS = {
    "distinct": "; use count_distinct(x) to count distinct values",
    "between": "; use x >= low and x <= high",
    "cast": "; column types come from the catalog",
}

MISPLACED_WHERE = (
    "'where' must directly follow an aggregate call, as in count(*) where status = 'returned' "
    "(one 'where' per aggregate: join conditions with 'and'; to narrow every aggregate, use the "
    "KPI's filter)"
)


def _terminal(token: SourceToken) -> str:
    if token.kind == "op":
        return "CMP" if token.text in _COMPARISONS else _OPERATOR_TERMINALS[token.text]
    if token.kind == "name":
        return _KEYWORD_TERMINALS.get(token.word, "NAME")
    return token.kind.upper()


class _SourceTokens(Lexer):
    """Hands lark the tokens `expression_tokens` already produced (and vetted)."""

    def __init__(self, lexer_conf: object) -> None:
        pass

    def lex(self, data: list[SourceToken]) -> Iterator[Token]:  # type: ignore[override]
        for token in data:
            if token.kind != "end":
                yield Token(_terminal(token), token.text, start_pos=token.pos, end_pos=token.end)


_PARSER = Lark(
    GRAMMAR,
    parser="lalr",
    lexer=_SourceTokens,
    start=["measure", "filter", "derived"],
    maybe_placeholders=True,
    propagate_positions=True,
)


def parse_tree(text: str, tokens: list[SourceToken], start: str) -> Tree[Token]:
    """The syntax tree of `tokens` (of `text`) from the rule `start`; ExpressionError if none."""
    for token in tokens:
        if token.word in RESERVED_WORDS:
            raise ExpressionError(
                text,
                token.pos,
                f"'{token.text}' is a reserved SQL keyword and not allowed in an expression"
                + _RESERVED_HINTS.get(token.word, ""),
            )
    if tokens[0].kind == "end":
        raise ExpressionError(text, 0, "empty expression")
    try:
        return _PARSER.parse(tokens, start=start)
    except UnexpectedToken as error:
        raise _SyntaxError(text, tokens, error).explain() from None


class _SyntaxError:
    """Turns lark's "unexpected token, expected one of these terminals" into our words."""

    def __init__(self, text: str, tokens: list[SourceToken], error: UnexpectedToken) -> None:
        self.text = text
        self.tokens = tokens
        self.expected: set[str] = set(error.expected)
        if error.token.type == "$END":
            self.index = len(tokens) - 1
        else:
            self.index = next(i for i, t in enumerate(tokens) if t.pos == error.token.start_pos)
        self.token = tokens[self.index]
        self.terminal = "$END" if self.token.kind == "end" else _terminal(self.token)

    def previous(self, back: int = 1) -> str:
        return self.previous_of(self.index, back)

    def previous_of(self, index: int, back: int = 1) -> str:
        """The terminal `back` tokens before the token at `index` ("" before the first)."""
        return _terminal(self.tokens[index - back]) if index - back >= 0 else ""

    def unclosed(self) -> list[int]:
        """Indexes of the '(' still open before the unexpected token, innermost last."""
        opened: list[int] = []
        for index, token in enumerate(self.tokens[: self.index]):
            if token.kind == "op" and token.text == "(":
                opened.append(index)
            elif token.kind == "op" and token.text == ")" and opened:
                opened.pop()
        return opened

    def error(self, reason: str) -> ExpressionError:
        return ExpressionError(self.text, self.token.pos, reason)

    def unexpected(self, hint: str = "") -> ExpressionError:
        if self.terminal == "$END":
            return self.error("unexpected end of expression" + hint)
        return self.error(f"unexpected {self.token.describe()}{hint}")

    def call_before(self, index: int) -> str:
        """The text of the aggregate call whose ')' is at `index`, e.g. `count(*)`."""
        depth = 0
        for start in range(index, -1, -1):
            token = self.tokens[start]
            if token.kind == "op" and token.text in "()":
                depth += 1 if token.text == ")" else -1
                if depth == 0:
                    first = self.tokens[max(start - 1, 0)]
                    return self.text[first.pos : self.tokens[index].end]
        return "count(*)"

    def explain(self) -> ExpressionError:
        unclosed = self.unclosed()
        if self.terminal == "WHERE":
            return self.misplaced_where(unclosed)
        if self.previous() == "WHERE":
            call = self.call_before(self.index - 2)
            return self.error(f"'where' needs a condition, e.g. {call} where status = 'returned'")
        if self.terminal == "RPAR" and not unclosed:
            return self.error("unbalanced ')': no matching '('")
        if self.previous() == "IN" and self.terminal != "LPAR":
            return self.unexpected(f"; expected '(' after '{self.tokens[self.index - 1].text}'")
        if "IS" in (self.previous(), self.previous(2)) and self.terminal not in ("NULL", "NOT"):
            return self.unexpected("; expected 'null' or 'not null' after 'is'")
        if self.previous() == "NOT" and "IN" in self.expected:
            return self.unexpected("; expected 'in' after 'not' (or 'is not null')")
        if self.previous() == "NAME" and "CMP" in self.expected and self.terminal != "LPAR":
            column = self.tokens[self.index - 1].text
            return self.unexpected(
                f"; expected a comparison, 'in' or 'is null' after column '{column}'"
            )
        if self.terminal == "LPAR" and "STRING" in self.expected:
            return self.unexpected("; parentheses may group conditions, not values")
        if self.terminal == "RPAR":
            return self.error("unexpected ')'; expected a value")
        if self.terminal in _KEYWORD_TERMINALS.values() and "NAME" in self.expected:
            return self.error(f"unexpected keyword '{self.token.text}'")
        if "RPAR" in self.expected and unclosed:
            opening = self.tokens[unclosed[-1]].pos
            if self.terminal == "$END":
                return self.error(f"missing ')' to close the '(' at position {opening}")
            return self.error(
                f"expected ')' to close the '(' at position {opening}, "
                f"found {self.token.describe()}"
            )
        if "$END" in self.expected:
            return self.unexpected(" after the end of the expression")
        return self.unexpected()

    def misplaced_where(self, unclosed: list[int]) -> ExpressionError:
        if unclosed and unclosed[-1] > 0 and self.previous_of(unclosed[-1]) == "NAME":
            opening = unclosed[-1]
            function = self.tokens[opening - 1].word
            inside = self.text[self.tokens[opening].end : self.token.pos].strip()
            return self.error(
                f"'where' inside the parentheses of {function}(): write it after the closing "
                f"parenthesis, as in {function}({inside}) where …"
            )
        return self.error(MISPLACED_WHERE)
