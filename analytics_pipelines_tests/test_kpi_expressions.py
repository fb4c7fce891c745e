"""Tests for the KPI expression language (parser, validation, SQLAlchemy compilation)."""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from analytics_pipelines.lib.kpi.expression_sql import (
    compile_derived,
    compile_filter,
    compile_measure,
)
from analytics_pipelines.lib.kpi.expressions import (
    Aggregate,
    And,
    BinaryOp,
    BooleanColumn,
    ColumnRef,
    ColumnType,
    Comparison,
    CompiledMeasure,
    Constant,
    ExpressionError,
    InList,
    IsNull,
    KpiRef,
    Measure,
    Negate,
    Not,
    Number,
    Or,
    parse_derived,
    parse_filter,
    parse_measure,
)

COLUMNS: dict[str, ColumnType] = {
    "amount": "decimal",
    "discount": "decimal",
    "quantity": "integer",
    "unit_price": "decimal",
    "customer_id": "integer",
    "customer_name": "string",
    "region": "string",
    "is_refunded": "boolean",
    "order_date": "date",
    "created_at": "timestamp",
}

_SQL_TYPES: dict[str, Callable[[], sa.types.TypeEngine[Any]]] = {
    "string": sa.String,
    "integer": sa.Integer,
    "decimal": sa.Numeric,
    "boolean": sa.Boolean,
    "date": sa.Date,
    "timestamp": sa.DateTime,
}

ORDERS = sa.Table(
    "orders",
    sa.MetaData(),
    *(sa.Column(name, _SQL_TYPES[kind]()) for name, kind in COLUMNS.items()),
)
PG = postgresql.dialect()


def pg_sql(expr: sa.ColumnElement[Any]) -> str:
    return str(expr.compile(dialect=PG))


def pg_params(expr: sa.ColumnElement[Any]) -> dict[str, Any]:
    return dict(expr.compile(dialect=PG).params)


def measure_sql(text: str) -> str:
    return pg_sql(compile_measure(parse_measure(text, COLUMNS), ORDERS.c))


def filter_sql(text: str) -> str:
    return pg_sql(compile_filter(parse_filter(text, COLUMNS), ORDERS.c))


def amount_col() -> ColumnRef:
    return ColumnRef("amount", "decimal")


# --------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sql", "value_type", "additive"),
    [
        ("sum(amount)", "sum(orders.amount)", "decimal", True),
        ("sum(quantity)", "sum(orders.quantity)", "integer", True),
        ("count(customer_id)", "count(orders.customer_id)", "integer", True),
        ("count(*)", "count(*)", "integer", True),
        ("count_distinct(customer_id)", "count(DISTINCT orders.customer_id)", "integer", False),
        ("count_distinct(region)", "count(DISTINCT orders.region)", "integer", False),
        ("avg(quantity)", "avg(orders.quantity)", "decimal", False),
        ("min(amount)", "min(orders.amount)", "decimal", True),
        ("max(amount)", "max(orders.amount)", "decimal", True),
        ("min(order_date)", "min(orders.order_date)", "date", True),
        ("max(created_at)", "max(orders.created_at)", "timestamp", True),
        ("count(region)", "count(orders.region)", "integer", True),
        ("SUM(amount)", "sum(orders.amount)", "decimal", True),
        ("Count ( * )", "count(*)", "integer", True),
    ],
)
def test_every_aggregate(text: str, sql: str, value_type: str, additive: bool) -> None:
    measure = parse_measure(text, COLUMNS)
    assert measure_sql(text) == sql
    assert measure.value_type == value_type
    assert measure.is_additive is additive


def test_count_star_ast_and_columns() -> None:
    measure = parse_measure("count(*)", COLUMNS)
    assert measure.root == Aggregate("count", None)
    assert measure.columns == frozenset()
    assert isinstance(measure, CompiledMeasure)


def test_measure_columns_and_arithmetic_of_aggregates_is_not_additive() -> None:
    measure = parse_measure("sum(amount) - sum(discount)", COLUMNS)
    assert measure.columns == {"amount", "discount"}
    assert measure.is_additive is False
    assert measure_sql("sum(amount) - sum(discount)") == "sum(orders.amount) - sum(orders.discount)"


def test_multiplication_binds_tighter_than_addition() -> None:
    measure = parse_measure("sum(amount) - sum(discount) * 2", COLUMNS)
    assert measure.root == BinaryOp(
        "-",
        Aggregate("sum", amount_col()),
        BinaryOp("*", Aggregate("sum", ColumnRef("discount", "decimal")), Number(Decimal(2))),
    )


def test_operators_are_left_associative() -> None:
    measure = parse_measure("sum(amount) - sum(discount) - count(*)", COLUMNS)
    assert isinstance(measure.root, BinaryOp)
    assert measure.root.right == Aggregate("count", None)
    assert isinstance(measure.root.left, BinaryOp)
    assert measure.root.left.op == "-"


def test_parentheses_override_precedence() -> None:
    measure = parse_measure("(sum(amount) - sum(discount)) * 2", COLUMNS)
    assert isinstance(measure.root, BinaryOp)
    assert measure.root.op == "*"
    sql = measure_sql("(sum(amount) - sum(discount)) * 2")
    assert sql.startswith("(sum(orders.amount) - sum(orders.discount)) * ")


def test_arithmetic_inside_aggregate() -> None:
    measure = parse_measure("sum(quantity * unit_price + 1)", COLUMNS)
    assert measure.columns == {"quantity", "unit_price"}
    assert measure.value_type == "decimal"
    assert measure_sql("sum(quantity * unit_price + 1)").startswith(
        "sum(orders.quantity * orders.unit_price + "
    )


def test_division_is_numeric_and_null_safe() -> None:
    expr = compile_measure(parse_measure("sum(quantity * unit_price) / 100", COLUMNS), ORDERS.c)
    sql = pg_sql(expr)
    assert sql.startswith("CAST(sum(orders.quantity * orders.unit_price) AS NUMERIC) / ")
    assert "nullif(CAST(" in sql
    assert "100" not in sql
    assert Decimal(100) in pg_params(expr).values()
    assert parse_measure("sum(quantity) / count(*)", COLUMNS).value_type == "decimal"


def test_integer_division_is_cast_to_numeric() -> None:
    sql = measure_sql("sum(quantity) / count(*)")
    assert sql == (
        "CAST(sum(orders.quantity) AS NUMERIC) / "
        "CAST(nullif(CAST(count(*) AS NUMERIC), %(param_1)s) AS NUMERIC)"
    )


def test_unary_minus() -> None:
    assert parse_measure("-sum(amount)", COLUMNS).root == Negate(Aggregate("sum", amount_col()))
    assert parse_measure("sum(-amount)", COLUMNS).root == Aggregate("sum", Negate(amount_col()))
    # A negated constant is folded into the constant.
    assert parse_measure("sum(amount) * -2", COLUMNS).root == BinaryOp(
        "*", Aggregate("sum", amount_col()), Number(Decimal(-2))
    )
    assert measure_sql("-sum(amount)") == "-sum(orders.amount)"


def test_double_negation_never_renders_a_sql_comment() -> None:
    assert "--" not in measure_sql("- -sum(amount)")
    assert "--" not in measure_sql("sum(amount) - -sum(discount)")


def test_decimal_constants() -> None:
    measure = parse_measure("sum(amount) * 0.5 + .25", COLUMNS)
    expr = compile_measure(measure, ORDERS.c)
    assert set(pg_params(expr).values()) == {Decimal("0.5"), Decimal("0.25")}


def test_whitespace_and_newlines_are_insignificant() -> None:
    measure = parse_measure("  sum(\n\tamount\n)\n- sum(discount) ", COLUMNS)
    assert measure.columns == {"amount", "discount"}


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sql_op"),
    [
        ("amount = 10", "="),
        ("amount != 10", "!="),
        ("amount <> 10", "!="),
        ("amount < 10", "<"),
        ("amount <= 10", "<="),
        ("amount > 10", ">"),
        ("amount >= 10", ">="),
    ],
)
def test_every_comparison_operator(text: str, sql_op: str) -> None:
    expr = compile_filter(parse_filter(text, COLUMNS), ORDERS.c)
    assert pg_sql(expr) == f"orders.amount {sql_op} %(param_1)s"
    assert pg_params(expr) == {"param_1": Decimal(10)}


def test_string_comparison_with_escaped_quote() -> None:
    f = parse_filter("customer_name = 'O''Brien'", COLUMNS)
    assert f.root == Comparison(
        "=", ColumnRef("customer_name", "string"), Constant("O'Brien", "string")
    )
    assert pg_params(compile_filter(f, ORDERS.c)) == {"param_1": "O'Brien"}


def test_literal_on_the_left_and_negative_numbers() -> None:
    f = parse_filter("-5 < amount", COLUMNS)
    assert f.root == Comparison("<", Constant(Decimal(-5), "decimal"), amount_col())
    assert pg_sql(compile_filter(f, ORDERS.c)) == "%(param_1)s < orders.amount"


def test_column_against_column() -> None:
    f = parse_filter("amount > discount", COLUMNS)
    assert f.columns == {"amount", "discount"}
    assert pg_sql(compile_filter(f, ORDERS.c)) == "orders.amount > orders.discount"
    # integer and decimal are comparable; date and timestamp are comparable.
    parse_filter("quantity < amount", COLUMNS)
    parse_filter("order_date <= created_at", COLUMNS)


def test_in_and_not_in() -> None:
    f = parse_filter("region in ('EU', 'US')", COLUMNS)
    assert f.root == InList(
        ColumnRef("region", "string"), (Constant("EU", "string"), Constant("US", "string"))
    )
    expr = compile_filter(f, ORDERS.c)
    assert pg_sql(expr).startswith("orders.region IN (")
    assert sorted(pg_params(expr).values()) == ["EU", "US"]

    negated = compile_filter(parse_filter("quantity NOT IN (1, 2, 3)", COLUMNS), ORDERS.c)
    assert "orders.quantity NOT IN (" in pg_sql(negated)
    assert sorted(pg_params(negated).values()) == [Decimal(1), Decimal(2), Decimal(3)]


def test_is_null_and_is_not_null() -> None:
    f = parse_filter("region is null", COLUMNS)
    assert f.root == IsNull(ColumnRef("region", "string"))
    assert pg_sql(compile_filter(f, ORDERS.c)) == "orders.region IS NULL"
    g = parse_filter("region IS NOT NULL", COLUMNS)
    assert g.root == IsNull(ColumnRef("region", "string"), negated=True)
    assert pg_sql(compile_filter(g, ORDERS.c)) == "orders.region IS NOT NULL"


def test_boolean_literals_and_columns() -> None:
    f = parse_filter("is_refunded = TRUE", COLUMNS)
    assert f.root == Comparison("=", ColumnRef("is_refunded", "boolean"), Constant(True, "boolean"))
    assert pg_params(compile_filter(f, ORDERS.c)) == {"param_1": True}
    bare = parse_filter("not is_refunded", COLUMNS)
    assert bare.root == Not(BooleanColumn(ColumnRef("is_refunded", "boolean")))
    assert pg_sql(compile_filter(bare, ORDERS.c)) == "NOT orders.is_refunded"


def test_date_and_timestamp_literals_are_bound_as_python_values() -> None:
    f = parse_filter("order_date >= '2026-01-01' and created_at < '2026-02-01 12:30:00'", COLUMNS)
    params = pg_params(compile_filter(f, ORDERS.c))
    assert sorted(params.values(), key=str) == [
        dt.date(2026, 1, 1),
        dt.datetime(2026, 2, 1, 12, 30),
    ]
    day_only = parse_filter("created_at >= '2026-01-01'", COLUMNS)
    assert day_only.root == Comparison(
        ">=", ColumnRef("created_at", "timestamp"), Constant(dt.datetime(2026, 1, 1), "timestamp")
    )
    aware = parse_filter("created_at >= '2026-01-01T00:00:00+00:00'", COLUMNS)
    assert "TIMESTAMP WITH TIME ZONE" in pg_sql(compile_filter(aware, ORDERS.c))


def test_and_binds_tighter_than_or_and_keywords_are_case_insensitive() -> None:
    f = parse_filter("region = 'EU' OR region = 'US' And amount > 0", COLUMNS)
    assert isinstance(f.root, Or)
    assert isinstance(f.root.operands[1], And)
    grouped = parse_filter("(region = 'EU' or region = 'US') and amount > 0", COLUMNS)
    assert isinstance(grouped.root, And)
    assert isinstance(grouped.root.operands[0], Or)
    sql = pg_sql(compile_filter(grouped, ORDERS.c))
    assert sql == (
        "(orders.region = %(param_1)s::VARCHAR OR orders.region = %(param_2)s::VARCHAR) "
        "AND orders.amount > %(param_3)s"
    )


def test_not_over_a_group() -> None:
    f = parse_filter("NOT (region = 'EU' and amount > 1)", COLUMNS)
    assert isinstance(f.root, Not)
    assert pg_sql(compile_filter(f, ORDERS.c)).startswith("NOT (orders.region = ")


def test_filter_columns() -> None:
    f = parse_filter(
        "region in ('EU') and (is_refunded or order_date is null) and amount > discount", COLUMNS
    )
    assert f.columns == {"region", "is_refunded", "order_date", "amount", "discount"}


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
def test_filters_select_the_expected_rows_in_sqlite() -> None:
    engine = sa.create_engine("sqlite://")
    ORDERS.metadata.create_all(engine)
    rows = [
        {"region": "EU", "amount": 10, "is_refunded": False, "order_date": dt.date(2026, 1, 5)},
        {"region": "US", "amount": 20, "is_refunded": True, "order_date": dt.date(2025, 12, 1)},
        {"region": "O'Hare", "amount": 30, "is_refunded": False, "order_date": None},
    ]
    with engine.begin() as conn:
        conn.execute(ORDERS.insert(), rows)

        def regions(text: str) -> list[str]:
            where = compile_filter(parse_filter(text, COLUMNS), ORDERS.c)
            query = sa.select(ORDERS.c.region).where(where).order_by(ORDERS.c.region)
            return list(conn.scalars(query))

        assert regions("region in ('EU', 'US') and not is_refunded") == ["EU"]
        assert regions("order_date >= '2026-01-01' or order_date is null") == ["EU", "O'Hare"]
        assert regions("region = 'O''Hare'") == ["O'Hare"]
        assert regions("amount > 15 and region not in ('US')") == ["O'Hare"]


# --------------------------------------------------------------------------------------------
# Conditional aggregates: AGG(...) where CONDITION
# --------------------------------------------------------------------------------------------


def test_where_binds_to_the_aggregate_before_it() -> None:
    measure = parse_measure("count(*) where region = 'EU'", COLUMNS)
    region_is_eu = Comparison("=", ColumnRef("region", "string"), Constant("EU", "string"))
    assert measure.root == Aggregate("count", None, region_is_eu)
    assert measure.conditions == [region_is_eu]
    assert measure.columns == {"region"}
    assert measure.value_type == "integer"
    expr = compile_measure(measure, ORDERS.c)
    assert pg_sql(expr) == "count(*) FILTER (WHERE orders.region = %(param_1)s::VARCHAR)"
    assert pg_params(expr) == {"param_1": "EU"}


def test_conditional_aggregate_inside_arithmetic_in_parentheses() -> None:
    text = "(count(*) where is_refunded) / count(*)"
    measure = parse_measure(text, COLUMNS)
    assert measure.root == BinaryOp(
        "/",
        Aggregate("count", None, BooleanColumn(ColumnRef("is_refunded", "boolean"))),
        Aggregate("count", None),
    )
    assert measure.value_type == "decimal"
    assert measure_sql(text) == (
        "CAST(count(*) FILTER (WHERE orders.is_refunded) AS NUMERIC) / "
        "CAST(nullif(CAST(count(*) AS NUMERIC), %(param_1)s) AS NUMERIC)"
    )
    # Two aggregates that differ only by their condition are two aggregates.
    both = parse_measure(
        "(sum(amount) where region = 'EU') - (sum(amount) where region = 'US')", COLUMNS
    )
    assert len(both.aggregates) == 2


def test_where_takes_the_whole_filter_grammar_and_its_typing() -> None:
    text = (
        "sum(quantity * unit_price) where region in ('EU', 'US') and not is_refunded "
        "and (order_date >= '2026-01-01' or order_date is null) and quantity > -1"
    )
    measure = parse_measure(text, COLUMNS)
    assert isinstance(measure.root, Aggregate) and measure.root.condition is not None
    assert measure.columns == {"quantity", "unit_price", "region", "is_refunded", "order_date"}
    params = pg_params(compile_measure(measure, ORDERS.c))
    assert sorted(map(str, params.values())) == ["-1", "2026-01-01", "EU", "US"]
    assert dt.date(2026, 1, 1) in params.values()


def test_where_is_joined_to_the_kpi_filter_in_each_aggregate() -> None:
    measure = parse_measure("(count(*) where region = 'EU') + sum(amount)", COLUMNS)
    kpi_filter = compile_filter(parse_filter("amount > 0", COLUMNS), ORDERS.c)
    sql = pg_sql(compile_measure(measure, ORDERS.c, where=kpi_filter, empty_sum=Decimal(0)))
    assert sql == (
        "(count(*) FILTER (WHERE orders.amount > %(param_1)s "
        "AND orders.region = %(param_2)s::VARCHAR)) + coalesce(sum(orders.amount) FILTER (WHERE orders.amount > %(param_1)s), %(param_3)s)"
    )


def test_every_literal_of_a_where_is_a_bound_parameter() -> None:
    hostile = "x'); drop table orders; -- /* */"
    measure = parse_measure(
        "sum(amount) where customer_name = 'x''); drop table orders; -- /* */' and amount > 12345",
        COLUMNS,
    )
    expr = compile_measure(measure, ORDERS.c)
    sql = pg_sql(expr)
    for literal in ("12345", "drop table", "x'"):
        assert literal not in sql
    assert hostile in pg_params(expr).values()


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
def test_conditional_aggregates_count_the_expected_rows_in_sqlite() -> None:
    engine = sa.create_engine("sqlite://")
    ORDERS.metadata.create_all(engine)
    rows = [
        {"region": "EU", "amount": 10, "is_refunded": False},
        {"region": "EU", "amount": 20, "is_refunded": True},
        {"region": "US", "amount": 30, "is_refunded": False},
        {"region": "US", "amount": 40, "is_refunded": False},
    ]
    with engine.begin() as conn:
        conn.execute(ORDERS.insert(), rows)

        def value(text: str) -> Any:
            measure = compile_measure(parse_measure(text, COLUMNS), ORDERS.c, empty_sum=Decimal(0))
            return conn.execute(sa.select(measure)).scalar_one()

        assert value("count(*) where region = 'EU'") == 2
        assert value("sum(amount) where not is_refunded") == 80
        assert value("count(*) where region = 'Mars'") == 0
        assert value("sum(amount) where region = 'Mars'") == 0
        assert float(value("(count(*) where is_refunded) / count(*)")) == 0.25


CONDITIONAL_ERRORS = [
    # Arithmetic after an unparenthesised conditional aggregate: where does the condition end?
    (
        "count(*) where region = 'EU' / count(*)",
        29,
        "'/' after a conditional aggregate: wrap the conditional aggregate in parentheses, "
        "e.g. (count(*) where region = 'EU') / ...",
    ),
    ("sum(amount) where is_refunded + 1", 30, "wrap the conditional aggregate in parentheses"),
    ("count(*) where quantity > 5 - 1", 28, "'-' after a conditional aggregate"),
    (
        "count(*) / count(*) where region = 'EU'",
        20,
        "a conditional aggregate inside arithmetic must be wrapped in parentheses: "
        "(count(*) where region = 'EU'); 'where' applies to that aggregate only",
    ),
    ("-count(*) where is_refunded", 10, "must be wrapped in parentheses"),
    # where in the wrong place
    (
        "sum(amount where is_refunded)",
        11,
        "'where' inside the parentheses of sum(): write it after the closing parenthesis, "
        "as in sum(amount) where …",
    ),
    ("count(* where is_refunded)", 8, "'where' inside the parentheses of count()"),
    (
        "(sum(amount) - sum(discount)) where is_refunded",
        30,
        "'where' must directly follow an aggregate call",
    ),
    ("sum(amount) + 1 where is_refunded", 16, "'where' must directly follow an aggregate call"),
    (
        "count(*) where is_refunded where region = 'EU'",
        27,
        "one 'where' per aggregate: join conditions with 'and'",
    ),
    ("where is_refunded", 0, "'where' must directly follow an aggregate call"),
    ("amount where is_refunded", 7, "'where' must directly follow an aggregate call"),
    ("count(*) where", 14, "'where' needs a condition, e.g. count(*) where status = 'returned'"),
    ("(count(*) where) / count(*)", 15, "'where' needs a condition"),
    # the condition is the filter grammar, with its checks
    ("count(*) where regoin = 'EU'", 15, "unknown column 'regoin'; did you mean 'region'?"),
    (
        "count(*) where quantity = 'ten'",
        26,
        "cannot compare integer column 'quantity' with a string",
    ),
    ("count(*) where order_date > '2026-13-01'", 28, "invalid date '2026-13-01'"),
    ("count(*) where amount = null", 24, "use 'is null' instead of '= null'"),
    (
        "count(*) where sum(amount) > 0",
        15,
        "aggregate 'sum' is not allowed in the 'where' of count(*)",
    ),
    ("count(*) where lower(region) = 'eu'", 15, "unknown function 'lower'"),
    ("count(*) where region like 'E%'", 22, "'like' is a reserved SQL keyword"),
    # injection attempts inside a where: refused at parse time
    ("count(*) where region = 'EU\x00'", 27, "a NUL character (\\x00) is not allowed"),
    ("count(*) where region = 'EU' -- or 1 = 1", 29, "SQL comments ('--') are not allowed"),
    ("count(*) where region = 'EU' /* */", 29, "SQL comments ('/* */') are not allowed"),
    ("count(*) where /* */ is_refunded", 15, "SQL comments ('/* */') are not allowed"),
    (
        "count(*) where region in (select region from orders)",
        26,
        "'select' is a reserved SQL keyword",
    ),
    ("count(*) where (select 1) = 1", 16, "'select' is a reserved SQL keyword"),
    ("count(*) where exists (select 1)", 15, "'exists' is a reserved SQL keyword"),
    ("count(*) where amount::text = '1'", 21, "casts ('::') are not allowed"),
    ("count(*) where cast(amount as text) = '1'", 15, "'cast' is a reserved SQL keyword"),
    ("count(*) where region = 'EU'; drop table orders", 28, "';' is not allowed"),
    ("count(*) where region = 'EU;' ; select 1", 30, "';' is not allowed"),
]


@pytest.mark.parametrize(("text", "position", "reason"), CONDITIONAL_ERRORS)
def test_conditional_aggregate_refusals(text: str, position: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_measure(text, COLUMNS)
    assert info.value.position == position, str(info.value)
    assert reason in info.value.reason, str(info.value)
    assert info.value.expression == text


def test_missing_parentheses_error_points_at_the_operator() -> None:
    with pytest.raises(ExpressionError) as info:
        parse_measure("count(*) where region = 'EU' / count(*)", COLUMNS)
    assert str(info.value).splitlines()[1:] == [
        "  count(*) where region = 'EU' / count(*)",
        "                               ^",
    ]


def test_where_is_not_part_of_filters_or_derived_kpis() -> None:
    with pytest.raises(ExpressionError, match="'where' must directly follow an aggregate call"):
        parse_filter("region = 'EU' where is_refunded", COLUMNS)
    with pytest.raises(ExpressionError, match="'where' must directly follow an aggregate call"):
        parse_derived("net_revenue where is_refunded", ["net_revenue"])


# --------------------------------------------------------------------------------------------
# Derived KPIs
# --------------------------------------------------------------------------------------------


def test_derived_references_and_ast() -> None:
    d = parse_derived("(gross - net) / gross * 100", ["gross", "net", "unused"])
    assert d.references == {"gross", "net"}
    assert d.root == BinaryOp(
        "*",
        BinaryOp("/", BinaryOp("-", KpiRef("gross"), KpiRef("net")), KpiRef("gross")),
        Number(Decimal(100)),
    )


def test_derived_division_compiles_with_nullif() -> None:
    kpis = sa.select(
        sa.literal_column("1").label("net_revenue"), sa.literal_column("0").label("order_count")
    ).subquery("k")
    expr = compile_derived(
        parse_derived("net_revenue / order_count", ["net_revenue", "order_count"]), kpis.c
    )
    assert pg_sql(expr) == (
        "CAST(k.net_revenue AS NUMERIC) / "
        "CAST(nullif(CAST(k.order_count AS NUMERIC), %(param_1)s) AS NUMERIC)"
    )
    assert pg_params(expr) == {"param_1": Decimal(0)}


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
def test_derived_zero_denominator_yields_null_in_sqlite() -> None:
    d = parse_derived("revenue / orders", ["revenue", "orders"])
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        for orders, expected in ((0, None), (4, 2.5)):
            kpis = sa.select(
                sa.literal(10, sa.Numeric()).label("revenue"),
                sa.literal(orders, sa.Numeric()).label("orders"),
            ).subquery()
            value = conn.scalar(sa.select(compile_derived(d, kpis.c)))
            assert value == expected


def test_derived_accepts_constants_and_unary_minus() -> None:
    d = parse_derived("-a * 1.5 + b", {"a", "b"})
    assert d.references == {"a", "b"}


# --------------------------------------------------------------------------------------------
# PostgreSQL rendering: identifiers and bind parameters only, never literal values
# --------------------------------------------------------------------------------------------


def test_postgres_rendering_quotes_identifiers_and_binds_every_literal() -> None:
    table = sa.Table(
        "Order Lines",
        sa.MetaData(),
        sa.Column("Amount", sa.Numeric),
        sa.Column("user", sa.String),
    )
    types: dict[str, ColumnType] = {"Amount": "decimal", "user": "string"}
    hostile = "x'); drop table orders; -- /* */"
    f = parse_filter("user = 'x''); drop table orders; -- /* */' and Amount > 12345", types)
    m = parse_measure("sum(Amount) / 98765", types)
    for expr in (compile_filter(f, table.c), compile_measure(m, table.c)):
        compiled = expr.compile(dialect=postgresql.dialect())
        sql = str(compiled)
        assert '"Order Lines"."Amount"' in sql
        assert "%(param_1)s" in sql
        for literal in ("12345", "98765", "drop table", "x'"):
            assert literal not in sql
    assert '"Order Lines"."user" = %(param_1)s' in str(
        compile_filter(f, table.c).compile(dialect=PG)
    )
    assert hostile in pg_params(compile_filter(f, table.c)).values()


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------

MEASURE_ERRORS = [
    ("sum(amout)", 4, "unknown column 'amout'; did you mean 'amount'?"),
    ("sum(Amount)", 4, "unknown column 'Amount'; did you mean 'amount'?"),
    ("sum(customer_name)", 4, "sum() needs a numeric (integer or decimal) argument; "),
    ("avg(is_refunded)", 4, "'is_refunded' is a boolean column"),
    ("sum(order_date)", 4, "'order_date' is a date column"),
    ("min(region)", 4, "min() needs a numeric, date or timestamp argument"),
    ("sum(amount * region)", 13, "'*' needs numeric operands; 'region' is a string column"),
    ("max(order_date) - 1", 0, "'-' needs numeric operands; 'max(order_date)' is a date"),
    ("upper(region)", 0, "unknown function 'upper' (allowed: sum, count, count_distinct"),
    ("pg_sleep(1)", 0, "unknown function 'pg_sleep'"),
    ("sum(upper(region))", 4, "unknown function 'upper'"),
    ("sum(amount", 10, "missing ')' to close the '(' at position 3"),
    ("(sum(amount)", 12, "missing ')' to close the '(' at position 0"),
    ("sum(amount))", 11, "unbalanced ')': no matching '('"),
    ("sum(amount) + ()", 15, "unexpected ')'; expected a value"),
    ("1; drop table x", 1, "';' is not allowed"),
    ("sum(amount); drop table x", 11, "';' is not allowed"),
    ("amount -- comment", 7, "SQL comments ('--') are not allowed"),
    ("sum(amount)--", 11, "SQL comments ('--') are not allowed"),
    ("/* x */", 0, "SQL comments ('/* */') are not allowed"),
    ("sum(amount /* x */)", 11, "SQL comments ('/* */') are not allowed"),
    ("(select 1)", 1, "'select' is a reserved SQL keyword"),
    ("sum(amount) from orders", 12, "'from' is a reserved SQL keyword"),
    ("count(distinct amount)", 6, "use count_distinct(x)"),
    ("sum(amount) + 'abc", 14, "unterminated string literal"),
    ('sum("amount")', 4, "double-quoted identifiers are not allowed"),
    ("sum(count(amount))", 4, "nested aggregate: 'count' inside 'sum' is not allowed"),
    ("count_distinct(max(amount))", 15, "nested aggregate: 'max' inside 'count_distinct'"),
    ("amount", 0, "column 'amount' must be inside an aggregate in a measure, e.g. sum(amount)"),
    ("sum(amount) + discount", 14, "column 'discount' must be inside an aggregate"),
    ("region", 0, "e.g. count_distinct(region)"),
    ("", 0, "empty expression"),
    ("   \n ", 0, "empty expression"),
    ("sum(amount) foo", 12, "unexpected 'foo' after the end of the expression"),
    ("sum(amount) 1", 12, "unexpected number 1 after the end of the expression"),
    ("sum(amount) +", 13, "unexpected end of expression"),
    ("count()", 6, "count() needs an argument (use count(*) to count rows)"),
    ("sum(*)", 4, "'*' is only allowed in count(*)"),
    ("sum(amount, discount)", 10, "sum() takes exactly one argument"),
    ("sum(amount) / 0", 14, "division by the constant zero"),
    ("1 + 2", 0, "a measure needs an aggregate"),
    ("sum(amount) and count(*)", 12, "unexpected 'and' after the end of the expression"),
    ("sum(null)", 4, "unexpected keyword 'null'"),
    ("sum(amount) % 2", 12, "unexpected character '%'"),
    ("sum(amount::int)", 10, "casts ('::') are not allowed; column types come from the catalog"),
    ("sum(1.2.3)", 4, "malformed number '1.2.'"),
    ("sum(2x)", 4, "malformed number '2x'"),
    ("sum(`amount`)", 4, "unexpected character '`'"),
    ("sum(amount) == 1", 12, "use '=' for equality"),
    ("+sum(amount)", 0, "unexpected '+'"),
]


@pytest.mark.parametrize(("text", "position", "reason"), MEASURE_ERRORS)
def test_measure_refusals(text: str, position: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_measure(text, COLUMNS)
    assert info.value.position == position, str(info.value)
    assert reason in info.value.reason
    assert info.value.expression == text


FILTER_ERRORS = [
    ("regoin = 'EU'", 0, "unknown column 'regoin'; did you mean 'region'?"),
    ("quantity = 'ten'", 11, "cannot compare integer column 'quantity' with a string ('ten')"),
    ("amount > '5'", 9, "cannot compare decimal column 'amount' with a string"),
    ("region = 5", 9, "cannot compare string column 'region' with a number (5)"),
    ("is_refunded = 1", 14, "cannot compare boolean column 'is_refunded' with a number"),
    ("order_date > 20260101", 13, "cannot compare date column 'order_date' with a number"),
    ("region in ('EU', 1)", 17, "cannot compare string column 'region' with a number (1)"),
    ("quantity in (1, 'two')", 16, "cannot compare integer column 'quantity' with a string"),
    ("order_date > '2026-13-01'", 13, "invalid date '2026-13-01' for date column 'order_date'"),
    ("order_date = '2026-01-01 10:00'", 13, "invalid date"),
    ("created_at > 'yesterday'", 13, "invalid timestamp 'yesterday'"),
    ("quantity = order_date", 11, "cannot compare integer column 'quantity' with date column"),
    ("is_refunded < true", 12, "operator '<' is not allowed on boolean column 'is_refunded'"),
    ("amount = null", 9, "use 'is null' instead of '= null'"),
    ("amount <> null", 10, "use 'is not null' instead of '<> null'"),
    ("1 = 1", 0, "a comparison needs at least one column"),
    ("region", 6, "expected a comparison, 'in' or 'is null' after column 'region'"),
    ("true", 0, "a condition needs a column; 'true' is a constant"),
    ("region in ()", 11, "empty 'in' list"),
    ("region in ('EU',)", 16, "unexpected ')'"),
    ("region in 'EU'", 10, "expected '(' after 'in'"),
    ("region in ('EU', region)", 17, "'in' lists may only contain literals"),
    ("region in ('EU', null)", 17, "null is not allowed in an 'in' list"),
    ("'EU' in ('EU')", 0, "'in' needs a column on its left"),
    ("region is 5", 10, "expected 'null' or 'not null' after 'is'"),
    ("5 is null", 0, "'is null' needs a column on its left"),
    ("region like 'E%'", 7, "'like' is a reserved SQL keyword"),
    ("amount between 1 and 2", 7, "'between' is a reserved SQL keyword"),
    ("amount > (select 1)", 10, "'select' is a reserved SQL keyword"),
    ("amount in (select amount from orders)", 11, "'select' is a reserved SQL keyword"),
    ("(select 1)", 1, "'select' is a reserved SQL keyword"),
    ("amount > (1)", 9, "parentheses may group conditions, not values"),
    ("lower(region) = 'eu'", 0, "unknown function 'lower' (filters allow no functions)"),
    ("sum(amount) > 0", 0, "aggregate 'sum' is not allowed in a filter"),
    ("region = 'EU' and", 17, "unexpected end of expression"),
    ("region = 'EU' or or amount > 1", 17, "unexpected keyword 'or'"),
    ("(region = 'EU'", 14, "missing ')' to close the '(' at position 0"),
    ("region = 'EU')", 13, "unbalanced ')': no matching '('"),
    ("((region = 'EU') and amount > 1", 31, "missing ')' to close the '(' at position 0"),
    ("region = 'EU'; drop table orders", 13, "';' is not allowed"),
    ("region = 'EU' -- and amount > 0", 14, "SQL comments ('--') are not allowed"),
    ("region = /* */ 'EU'", 9, "SQL comments ('/* */') are not allowed"),
    ("region = 'EU", 9, "unterminated string literal"),
    ("region = 'it''s", 9, "unterminated string literal"),
    ('region = "EU"', 9, "double-quoted identifiers are not allowed"),
    ("\"region\" = 'EU'", 0, "double-quoted identifiers are not allowed"),
    ("region = 'EU' region", 14, "unexpected 'region' after the end of the expression"),
    ("region = 'EU' && amount > 0", 14, "unexpected character '&'"),
    ("", 0, "empty expression"),
]


@pytest.mark.parametrize(("text", "position", "reason"), FILTER_ERRORS)
def test_filter_refusals(text: str, position: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_filter(text, COLUMNS)
    assert info.value.position == position, str(info.value)
    assert reason in info.value.reason


DERIVED_ERRORS = [
    ("net_revenue / order_cnt", 14, "unknown KPI 'order_cnt'; did you mean 'order_count'?"),
    ("sum(net_revenue)", 0, "aggregate 'sum' is not allowed in a derived KPI"),
    ("round(net_revenue)", 0, "unknown function 'round'"),
    ("net_revenue / 0", 14, "division by the constant zero"),
    ("100", 0, "a derived KPI must reference at least one KPI"),
    ("(net_revenue / order_count", 26, "missing ')'"),
    ("net_revenue / order_count)", 25, "unbalanced ')'"),
    ("net_revenue; select 1", 11, "';' is not allowed"),
    ("net_revenue / (select 1)", 15, "'select' is a reserved SQL keyword"),
    ("", 0, "empty expression"),
]


@pytest.mark.parametrize(("text", "position", "reason"), DERIVED_ERRORS)
def test_derived_refusals(text: str, position: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_derived(text, ["net_revenue", "order_count"])
    assert info.value.position == position, str(info.value)
    assert reason in info.value.reason


def test_error_message_shows_position_reason_and_caret() -> None:
    with pytest.raises(ExpressionError) as info:
        parse_measure("sum(amout)", {"amount": "decimal", "region": "string"})
    assert str(info.value) == (
        "at position 4: unknown column 'amout'; did you mean 'amount'? (known: amount, region)\n"
        "  sum(amout)\n"
        "      ^"
    )


def test_error_caret_points_into_the_right_line_of_a_multiline_expression() -> None:
    text = "sum(amount)\n  - sum(discont)"
    with pytest.raises(ExpressionError) as info:
        parse_measure(text, COLUMNS)
    assert info.value.position == text.index("discont")
    assert str(info.value).splitlines()[1:] == ["    - sum(discont)", "          ^"]


def test_expression_error_is_a_value_error_and_picklable() -> None:
    with pytest.raises(ValueError, match="empty expression") as info:
        parse_filter("", COLUMNS)
    clone = pickle.loads(pickle.dumps(info.value))
    assert isinstance(clone, ExpressionError)
    assert (clone.expression, clone.position, clone.reason) == ("", 0, "empty expression")
    assert str(clone) == str(info.value)


def test_deep_nesting_is_refused_without_recursion_error() -> None:
    text = "(" * 500 + "sum(amount)" + ")" * 500
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse_measure(text, COLUMNS)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse_filter("not " * 500 + "is_refunded", COLUMNS)


def test_overlong_expression_is_refused() -> None:
    with pytest.raises(ExpressionError, match="too long"):
        parse_measure("sum(amount) + " * 1000 + "count(*)", COLUMNS)


def test_unsupported_catalog_column_type_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unsupported type 'text'"):
        parse_measure("count(*)", {"name": "text"})  # type: ignore[dict-item]


def test_syntax_errors_speak_the_language_not_the_parser_library() -> None:
    """Random token soups (a fixed seed) are refused with ExpressionError in our words: no lark
    terminal names, no other exception type, and a position inside the text."""
    import random

    words = [
        *("sum", "count", "avg", "count_distinct", "(", ")", "(", ")", "*", "+", "-", "/", ","),
        *("amount", "region", "is_refunded", "quantity", "1", "2.5", "'EU'", "where", "where"),
        *("and", "or", "not", "in", "is", "null", "true", "=", "<", "upper", "net_revenue"),
    ]
    rng = random.Random(20260329)
    parsers: list[Callable[[str], Any]] = [
        lambda text: parse_measure(text, COLUMNS),
        lambda text: parse_filter(text, COLUMNS),
        lambda text: parse_derived(text, ["net_revenue"]),
    ]
    refused = 0
    for _ in range(3000):
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 9)))
        for parse in parsers:
            try:
                parse(text)
            except ExpressionError as error:
                refused += 1
                assert 0 <= error.position <= len(text), (text, error.position)
                for leak in ("$END", "RPAR", "LPAR", "_AND", "Token(", "Expected one of"):
                    assert leak not in error.reason, (text, error.reason)
    assert refused > 5000


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("amount not null", 11, "unexpected 'null'; expected 'in' after 'not' (or 'is not null')"),
        ("region 'EU'", 7, "unexpected string 'EU'; expected a comparison, 'in' or 'is null'"),
        ("amount and is_refunded", 7, "unexpected 'and'; expected a comparison, 'in' or 'is null'"),
        (
            "(region = 'EU' amount",
            15,
            "expected ')' to close the '(' at position 0, found 'amount'",
        ),
    ],
)
def test_filter_syntax_error_hints(text: str, position: int, reason: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse_filter(text, COLUMNS)
    assert info.value.position == position, str(info.value)
    assert reason in info.value.reason, str(info.value)


def test_compiling_without_a_needed_column_raises_key_error() -> None:
    measure: Measure = parse_measure("sum(amount)", COLUMNS)
    with pytest.raises(KeyError, match="amount"):
        compile_measure(measure, {"region": ORDERS.c.region})
