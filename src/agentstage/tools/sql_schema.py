"""What ``sql.query`` knows about its database, read from the database itself at start-up.

From the schema (tables, columns, types, foreign keys) and a glance at the data (the few values
of low-cardinality text columns, which columns hold dates, which number is money) it derives:

- a one-paragraph description for the model;
- a GBNF grammar of the SELECT statements worth writing here: only real tables and columns, each
  column only where its table is in the FROM clause, joins only along foreign keys, text values
  only those that occur — a small model cannot write ``FROM sales_table``;
- worked examples (question → SQL) in the shapes people ask: counts, sums, averages, top-N,
  per group, per month, in a month, for one value. The user's question picks the closest ones;
- keywords for the router (table, column and value names).

Nothing here is specific to the bundled sample database.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import date
from itertools import combinations
from pathlib import Path

from agentstage.core.guidance import StringGrammar, ToolExample, literal

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MONTH_NUMBERS = {
    name: number
    for number, name in enumerate(("jan feb mar apr may jun jul aug sep oct nov dec").split(), start=1)
}
_MONTH_YEAR = re.compile(
    r"\b(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?\s+(\d{4})\b",
    re.I,
)
MAX_VALUES = 40
MAX_SOURCES = 24
NUMERIC = ("INT", "REAL", "NUM", "DEC", "FLOA", "DOUB")
MONEY_NAMES = ("total", "amount", "revenue", "sales", "price", "value", "cost", "spend")
MONEY_WORDS = ("revenue", "sales")
COUNT_NAMES = ("quantity", "qty", "units", "count", "items")
COUNT_WORDS = ("units", "items")
ENTITY_NAMES = ("name", "title", "label")
GENERIC_WORDS = frozenset(
    {"name", "title", "label", "date", "time", "type", "status", "value", "unit", "code", "id"}
)
TOOL = "sql.query"


@dataclass
class Column:
    name: str
    type: str
    values: list[str] = field(default_factory=list)  # the few distinct text values, if few
    is_date: bool = False
    first: str | None = None  # the earliest value of a date column

    @property
    def numeric(self) -> bool:
        return any(t in self.type.upper() for t in NUMERIC)

    @property
    def is_key(self) -> bool:
        return self.name == "id" or self.name.endswith("_id")

    @property
    def measure(self) -> bool:
        return self.numeric and not self.is_key


@dataclass
class Table:
    name: str
    columns: list[Column]
    foreign_keys: list[tuple[str, str, str]]  # (column, other table, other column)
    rows: int = 0

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def singular(self) -> str:
        return _singular(self.name)


@dataclass
class Source:
    """A FROM clause: one table, or one table joined to others along its foreign keys."""

    tables: list[Table]
    clause: str

    @property
    def qualified(self) -> bool:
        return len(self.tables) > 1

    def columns(self) -> list[tuple[Table, Column]]:
        return [(t, c) for t in self.tables for c in t.columns]

    def ref(self, table: Table, column: Column) -> str:
        return f"{table.name}.{column.name}" if self.qualified else column.name


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 3:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return word[:-1] + "ies"
    return word if word.endswith("s") else word + "s"


def _human(name: str) -> str:
    return name.replace("_", " ")


def read_schema(path: Path) -> list[Table]:
    """Tables with simple identifiers (anything else is left out of the grammar, not the database)."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        names = [
            r[0]
            for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return [_read_table(connection, name) for name in names if IDENTIFIER.match(name)]
    finally:
        connection.close()


def _read_table(connection: sqlite3.Connection, name: str) -> Table:
    columns = [
        Column(name=row[1], type=row[2] or "")
        for row in connection.execute(f'PRAGMA table_info("{name}")')
        if IDENTIFIER.match(row[1])
    ]
    keys = [
        (row[3], row[2], row[4] or "id")
        for row in connection.execute(f'PRAGMA foreign_key_list("{name}")')
        if IDENTIFIER.match(row[2]) and IDENTIFIER.match(row[3])
    ]
    rows = int(connection.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0])
    for column in columns:
        if column.numeric:
            continue
        sample = [
            r[0]
            for r in connection.execute(
                f'SELECT DISTINCT "{column.name}" FROM "{name}" WHERE "{column.name}" IS NOT NULL LIMIT {MAX_VALUES + 1}'
            )
        ]
        texts = [v for v in sample if isinstance(v, str)]
        column.is_date = bool(texts) and all(re.match(r"^\d{4}-\d{2}-\d{2}", v) for v in texts)
        if column.is_date:
            first = connection.execute(f'SELECT MIN("{column.name}") FROM "{name}"').fetchone()[0]
            column.first = first if isinstance(first, str) else None
        if not column.is_date and len(texts) <= MAX_VALUES and texts and all(_plain(v) for v in texts):
            column.values = sorted(texts)
    return Table(name=name, columns=columns, foreign_keys=keys, rows=rows)


def _plain(value: str) -> bool:
    return 0 < len(value) <= 40 and not any(c in value for c in "'\"\\\n\r\t") and value.isprintable()


def _sources(tables: list[Table]) -> list[Source]:
    by_name = {t.name: t for t in tables}
    sources = [Source([t], t.name) for t in tables]
    for table in tables:
        keys = [k for k in table.foreign_keys if k[1] in by_name and k[1] != table.name]
        for size in (1, 2):
            for combo in combinations(keys, size):
                joined = [by_name[k[1]] for k in combo]
                if len({t.name for t in joined}) != len(joined):
                    continue
                clause = table.name + "".join(
                    f" JOIN {other} ON {table.name}.{column} = {other}.{target}"
                    for column, other, target in combo
                )
                sources.append(Source([table, *joined], clause))
    return sources[:MAX_SOURCES]


class SqlGuide:
    """Description, grammar, examples and keywords for one database."""

    def __init__(self, tables: list[Table]):
        self.tables = tables
        self.sources = _sources(tables)

    @classmethod
    def load(cls, path: Path) -> SqlGuide:
        try:
            return cls(read_schema(path))
        except sqlite3.Error:
            return cls([])

    # description ---------------------------------------------------------------------------------

    def describe(self) -> str:
        """``table(col, col (A | B), …)`` per table, with the values of small text columns."""
        parts = []
        for table in self.tables:
            columns = []
            for column in table.columns:
                if column.values and len(column.values) <= 6:
                    columns.append(f"{column.name} ({' | '.join(column.values)})")
                else:
                    columns.append(column.name)
            parts.append(f"{table.name}({', '.join(columns)})")
        return "; ".join(parts) or "(no tables)"

    def hints(self, text: str) -> list[str]:
        """How the question's values are written in this database: ``March 2025 = '2025-03'``,
        ``filter: region = 'West'``, so a small model copies them instead of guessing."""
        notes = []
        if any(c.is_date for t in self.tables for c in t.columns):
            for match in _MONTH_YEAR.finditer(text):
                month = _MONTH_NUMBERS[match.group(1).lower()[:3]]
                notes.append(f"{match.group(0)} = '{match.group(2)}-{month:02d}'")
        for table in self.tables:
            for column in table.columns:
                if column.name in ENTITY_NAMES:
                    continue
                for value in column.values:
                    if len(value) > 2 and re.search(rf"\b{re.escape(value)}\b", text, re.I):
                        note = f"filter: {column.name} = '{value}'"
                        if note not in notes:
                            notes.append(note)
        return notes

    def keywords(self) -> set[str]:
        words: set[str] = set()
        for table in self.tables:
            words |= {table.name.lower(), table.singular.lower()}
            for column in table.columns:
                # What the data is about (a region, a category, a quantity), not generic names
                # ("name", "date", "id") that appear in every other question.
                if (column.values and column.name not in ENTITY_NAMES) or column.measure:
                    words |= set(column.name.lower().split("_")) - GENERIC_WORDS
                if column.name not in ENTITY_NAMES:
                    words |= {v.lower() for v in column.values if " " not in v}
            if any(c.measure and c.name in MONEY_NAMES for c in table.columns):
                words |= set(MONEY_WORDS)
        return {w for w in words if len(w) > 2}

    # grammar -------------------------------------------------------------------------------------

    def grammar(self, prefix: str) -> StringGrammar | None:
        if not self.sources:
            return None
        rules: dict[str, str] = {}
        statements = []
        for index, source in enumerate(self.sources):
            statements.append(self._statement(rules, prefix, f"{prefix}{index}-", source))
        rules[f"{prefix}op"] = '" = " | " != " | " > " | " < " | " >= " | " <= "'
        rules[f"{prefix}number"] = '"-"? [0-9] [0-9]{0,11} ("." [0-9] [0-9]{0,3})?'
        rules[f"{prefix}text"] = '"\'" [^\'"\\\\\\x00-\\x1F\\x7F] [^\'"\\\\\\x00-\\x1F\\x7F]{0,39} "\'"'
        rules[f"{prefix}limit"] = "[1-9] [0-9]?"
        rules[f"{prefix}alias"] = "[a-z] [a-z_]{0,23}"
        rules[f"{prefix}dir"] = '" DESC" | " ASC"'
        rules[f"{prefix}month"] = '"\'" [12] [0-9] [0-9] [0-9] "-" [01] [0-9] "\'"'
        rules[f"{prefix}year"] = '"\'" [12] [0-9] [0-9] [0-9] "\'"'
        rules[f"{prefix}day"] = '"\'" [12] [0-9] [0-9] [0-9] "-" [01] [0-9] "-" [0-3] [0-9] "\'"'
        rules[f"{prefix}sql"] = " | ".join(statements)
        return StringGrammar(root=f"{prefix}sql", rules=rules)

    def _statement(self, rules: dict[str, str], g: str, p: str, source: Source) -> str:
        """One source's SELECT; ``g`` prefixes the shared rules, ``p`` this source's own."""
        columns = source.columns()
        refs = [source.ref(t, c) for t, c in columns]
        measures = [source.ref(t, c) for t, c in columns if c.measure]
        dates = [source.ref(t, c) for t, c in columns if c.is_date]
        rules[f"{p}col"] = " | ".join(literal(r) for r in refs)
        months = [literal(f"strftime('%Y-%m', {d})") for d in dates]
        years = [literal(f"strftime('%Y', {d})") for d in dates]
        aggregates = ['"COUNT(*)"', f'"COUNT(DISTINCT " {p}col ")"']
        if measures:
            rules[f"{p}num"] = " | ".join(literal(m) for m in measures)
            aggregates.append(f'("SUM(" | "AVG(" | "MIN(" | "MAX(") {p}num ")"')
        if dates:
            aggregates.append(f'("MIN(" | "MAX(") ({" | ".join(literal(d) for d in dates)}) ")"')
        rules[f"{p}agg"] = " | ".join(aggregates)
        rules[f"{p}group"] = " | ".join([f"{p}col", *months, *years])
        rules[f"{p}item"] = f"{p}group | {p}agg"
        rules[f"{p}named"] = f'{p}item (" AS " {g}alias)?'
        # Conditions compare a column with what it can hold: a number for a measure, one of the
        # values that occur for a small text column, a date for a date; never an id with a guess.
        conditions = []
        if measures:
            conditions.append(f"{p}num {g}op {g}number")
        for table, column in columns:
            ref = source.ref(table, column)
            if column.values:
                values = " | ".join(literal(f"'{v}'") for v in column.values)
                conditions.append(f"{literal(ref + ' = ')} ({values})")
            elif not (column.numeric or column.is_date or column.is_key):
                conditions.append(f'{literal(ref)} (" = " | " LIKE ") {g}text')
        for month, year, day in zip(months, years, dates, strict=True):
            conditions.append(f'{month} " = " {g}month')
            conditions.append(f'{year} " = " {g}year')
            conditions.append(f"{literal(day)} {g}op {g}day")
        where = f'(" WHERE " {p}cond (" AND " {p}cond)?)? ' if conditions else ""
        if conditions:
            rules[f"{p}cond"] = " | ".join(conditions)
        return (
            f'"SELECT " {p}named (", " {p}named){{0,4}} {literal(" FROM " + source.clause)} '
            f'{where}(" GROUP BY " {p}group (", " {p}group)?)? '
            f'(" ORDER BY " {p}item {g}dir?)? (" LIMIT " {g}limit)?'
        )

    # examples ------------------------------------------------------------------------------------

    def examples(self) -> list[ToolExample]:
        """Question → SQL pairs in the common shapes, built from this schema's own names."""
        found: list[tuple[str, str]] = []
        for table in self.tables:
            found += self._single_table(table)
        for source in self.sources:
            if len(source.tables) == 2:
                found += self._joined(source.tables[0], source.tables[1], source)
        return [
            ToolExample(input=q, tool=TOOL, arguments={"query": sql}, shape=self._shape(sql))
            for q, sql in found
        ]

    def _shape(self, sql: str) -> str:
        """The statement with its names and values blanked: ``SELECT SUM(#) FROM #``."""
        names = {t.name for t in self.tables} | {c.name for t in self.tables for c in t.columns}
        shape = re.sub(r"'[^']*'", "?", sql)
        return re.sub(
            r"\b[A-Za-z_][A-Za-z0-9_]*\b", lambda m: "#" if m.group(0) in names else m.group(0), shape
        )

    def _measures(self, table: Table) -> list[tuple[Column, str]]:
        """Numeric columns with the words people use for them (money also as revenue, sales)."""
        result = []
        for column in table.columns:
            if not column.measure:
                continue
            result.append((column, _human(column.name)))
            if column.name in MONEY_NAMES:
                result += [(column, word) for word in MONEY_WORDS]
            if column.name in COUNT_NAMES:
                result += [(column, word) for word in COUNT_WORDS if word != column.name]
        return result

    def _summary(self, table: Table) -> list[tuple[str, str]]:
        """ "Summarize the data": how many rows, the main measure's sum and average, the date range."""
        t, plural = table.name, _human(table.name)
        parts = [f"COUNT(*) AS {t}"]
        measures = [c for c in table.columns if c.measure]
        main = next((c for c in measures if c.name in MONEY_NAMES), None) or next(iter(measures), None)
        if main is not None:
            total = main.name if main.name.startswith("total") else f"total_{main.name}"
            parts += [f"SUM({main.name}) AS {total}", f"AVG({main.name}) AS average_{main.name}"]
        dated = next((c for c in table.columns if c.is_date), None)
        if dated is not None:
            parts += [f"MIN({dated.name}) AS first_{dated.name}", f"MAX({dated.name}) AS last_{dated.name}"]
        sql = f"SELECT {', '.join(parts)} FROM {t}"
        subject = MONEY_WORDS[-1] if main is not None and main.name in MONEY_NAMES else plural
        return [(f"Summarize the {subject} data", sql), (f"Give me an overview of the {plural}", sql)]

    def _single_table(self, table: Table) -> list[tuple[str, str]]:
        t, plural = table.name, _human(table.name)
        found = [(f"How many {plural} are there?", f"SELECT COUNT(*) FROM {t}")]
        if table.foreign_keys:
            found += self._summary(table)
        for column, word in self._measures(table):
            c = column.name
            found += [
                (f"What is the total {word} of all {plural}?", f"SELECT SUM({c}) FROM {t}"),
                (f"What is the average {word} per {table.singular}?", f"SELECT AVG({c}) FROM {t}"),
                (f"What is the highest {word}?", f"SELECT MAX({c}) FROM {t}"),
            ]
        for column in table.columns:
            if column.values and column.name not in ENTITY_NAMES:
                value = column.values[len(column.values) // 2]
                found += [
                    (f"How many {plural} per {_human(column.name)}?",
                     f"SELECT {column.name}, COUNT(*) FROM {t} GROUP BY {column.name}"),
                    (f"How many {plural} are in the {value} {_human(column.name)}?",
                     f"SELECT COUNT(*) FROM {t} WHERE {column.name} = '{value}'"),
                ]  # fmt: skip
        for column in table.columns:
            if column.is_date:
                found += self._per_month(table, column)
        return found

    def _per_month(self, table: Table, column: Column) -> list[tuple[str, str]]:
        t, d, plural = table.name, column.name, _human(table.name)
        month = f"strftime('%Y-%m', {d})"
        example = date(2024, 3, 1)
        if column.first:
            with contextlib.suppress(ValueError):
                example = date.fromisoformat(column.first[:10])
        name = f"{example:%B %Y}"
        found = [
            (f"How many {plural} per month?", f"SELECT {month}, COUNT(*) FROM {t} GROUP BY {month}"),
            (f"Which month had the most {plural}?",
             f"SELECT {month}, COUNT(*) FROM {t} GROUP BY {month} ORDER BY COUNT(*) DESC LIMIT 1"),
            (f"How many {plural} were there in {name}?",
             f"SELECT COUNT(*) FROM {t} WHERE {month} = '{example:%Y-%m}'"),
        ]  # fmt: skip
        for measure, word in self._measures(table):
            c = measure.name
            found += [
                (f"Total {word} per month", f"SELECT {month}, SUM({c}) FROM {t} GROUP BY {month}"),
                (f"Which month had the highest {word}?",
                 f"SELECT {month}, SUM({c}) FROM {t} GROUP BY {month} ORDER BY SUM({c}) DESC LIMIT 1"),
                (f"What was the total {word} in {name}?",
                 f"SELECT SUM({c}) FROM {t} WHERE {month} = '{example:%Y-%m}'"),
            ]  # fmt: skip
        return found

    def _joined(self, fact: Table, dimension: Table, source: Source) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        clause, plural = source.clause, _human(fact.name)
        key = next((c for c in dimension.columns if c.name == "id"), None)
        for column in dimension.columns:
            if column.is_key or column.numeric or column.is_date:
                continue
            shown = f"{dimension.name}.{column.name}"
            is_entity = column.name in ENTITY_NAMES
            # Names need not be unique (two customers may share one): group an entity by its key.
            group = f"{dimension.name}.{key.name}" if is_entity and key is not None else shown
            entity = dimension.singular if is_entity else _human(column.name)
            found += [
                (f"How many {plural} per {entity}?",
                 f"SELECT {shown}, COUNT(*) FROM {clause} GROUP BY {group}"),
                (f"Which {entity} has the most {plural}?",
                 f"SELECT {shown}, COUNT(*) FROM {clause} GROUP BY {group} ORDER BY COUNT(*) DESC LIMIT 1"),
            ]  # fmt: skip
            for measure, word in self._measures(fact):
                m = f"SUM({fact.name}.{measure.name})"
                found += [
                    (f"Total {word} per {entity}", f"SELECT {shown}, {m} FROM {clause} GROUP BY {group}"),
                    (f"Top 3 {_plural(entity)} by {word}",
                     f"SELECT {shown}, {m} FROM {clause} GROUP BY {group} ORDER BY {m} DESC LIMIT 3"),
                    (f"Which {entity} has the highest {word}?",
                     f"SELECT {shown}, {m} FROM {clause} GROUP BY {group} ORDER BY {m} DESC LIMIT 1"),
                ]  # fmt: skip
                if is_entity and measure.name in COUNT_NAMES and word == _human(measure.name):
                    found.append(
                        (f"Which {entity} sold the most {COUNT_WORDS[0]}?",
                         f"SELECT {shown}, {m} FROM {clause} GROUP BY {group} ORDER BY {m} DESC LIMIT 1")
                    )  # fmt: skip
                if is_entity and measure.name in MONEY_NAMES and word == _human(measure.name):
                    found.append(
                        (f"Which {entity} spent the most?",
                         f"SELECT {shown}, {m} FROM {clause} GROUP BY {group} ORDER BY {m} DESC LIMIT 1")
                    )  # fmt: skip
            if column.values and column.name not in ENTITY_NAMES:
                value = column.values[0]
                found.append(
                    (f"How many {plural} came from the {value} {entity}?",
                     f"SELECT COUNT(*) FROM {clause} WHERE {group} = '{value}'")
                )  # fmt: skip
                money = [(m, w) for m, w in self._measures(fact) if m.name in MONEY_NAMES]
                for measure, word in (money or self._measures(fact))[:2]:
                    found.append(
                        (f"What is the total {word} in the {value} {entity}?",
                         f"SELECT SUM({fact.name}.{measure.name}) FROM {clause} WHERE {group} = '{value}'")
                    )  # fmt: skip
        return found
