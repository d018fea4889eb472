"""The action grammars, checked by llama.cpp's own grammar engine with the embedded model's
vocabulary: what a model can write under them is a valid action, and nothing else is."""

from __future__ import annotations

import ctypes
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentstage.core.orchestrators.grammar import action_grammar, choice_grammar, plan_grammar, schema_grammar
from agentstage.core.tools import Toolset
from agentstage.providers.llama_engine import Job, Loaded, check_grammar, generate, load_llama
from agentstage.providers.local import LocalModel
from agentstage.resources import sample_database
from agentstage.tools.registry import builtin_tools

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def loaded() -> Loaded:
    return load_llama(LocalModel().spec())


@pytest.fixture(scope="module")
def tools() -> Toolset:
    return Toolset(builtin_tools(sample_database()))


def accepts(loaded: Loaded, grammar: str, text: str) -> bool:
    """Would llama.cpp's grammar let a model write exactly ``text`` and then stop?"""
    import llama_cpp.llama_cpp as bindings

    check_grammar(loaded, grammar)
    llama = loaded.llama
    sampler = bindings.llama_sampler_init_grammar(llama._model.vocab, grammar.encode(), b"root")
    try:
        for token in [*llama.tokenize(text.encode(), add_bos=False, special=False), llama.token_eos()]:
            data = (bindings.llama_token_data * 1)(bindings.llama_token_data(token, 0.0, 0.0))
            candidates = bindings.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
            bindings.llama_sampler_apply(sampler, ctypes.byref(candidates))
            if data[0].logit == float("-inf"):
                return False
            if token != llama.token_eos():
                bindings.llama_sampler_accept(sampler, token)
        return True
    finally:
        bindings.llama_sampler_free(sampler)


def action(tool: str, **arguments: Any) -> str:
    return json.dumps({"tool": tool, "arguments": arguments})


def sql(query: str) -> str:
    return action("sql.query", query=query)


VALID_SQL = [
    "SELECT COUNT(*) FROM orders",
    "SELECT customers.region, SUM(orders.total) FROM orders JOIN customers ON orders.customer_id = customers.id "
    "GROUP BY customers.region ORDER BY SUM(orders.total) DESC LIMIT 1",
    "SELECT COUNT(*) FROM orders WHERE strftime('%Y-%m', order_date) = '2025-03'",
    "SELECT name FROM products WHERE category = 'Footwear'",
]
INVALID_SQL = [
    "SELECT * FROM sales_table",  # no such table
    "DELETE FROM orders",  # not a SELECT
    "SELECT region FROM orders",  # a column of another table
    "SELECT COUNT(*) FROM customers WHERE region = 'Atlantis'",  # a value that does not occur
    "SELECT COUNT(*) FROM orders; DROP TABLE orders",
]


def test_sql_actions_can_only_name_real_tables_and_columns(loaded: Loaded, tools: Toolset) -> None:
    grammar = action_grammar(tools, allowed=["sql.query"], answer=None)
    for query in VALID_SQL:
        assert accepts(loaded, grammar, sql(query)), query
    for query in INVALID_SQL:
        assert not accepts(loaded, grammar, sql(query)), query


def test_an_action_is_one_compact_object_and_nothing_else(loaded: Loaded, tools: Toolset) -> None:
    grammar = action_grammar(tools)
    assert accepts(loaded, grammar, action("math.calculate", expression="12 * 7"))
    assert accepts(loaded, grammar, json.dumps({"answer": "84 is the product."}))
    assert accepts(loaded, grammar, json.dumps({"answer": "two\nlines"}))  # an escaped newline is fine
    assert not accepts(loaded, grammar, '{"answer": "two\nlines"}'), "a raw newline in a string"
    assert not accepts(loaded, grammar, json.dumps({"answer": "84"}) + "\n\nThe answer is 84.")
    assert not accepts(loaded, grammar, '{ "answer": "84"}'), "free whitespace"
    assert not accepts(loaded, grammar, action("shell.run", command="rm -rf /"))
    assert not accepts(loaded, grammar, action("math.calculate", expression="__import__('os')"))


def test_a_required_call_and_a_quoted_answer(loaded: Loaded, tools: Toolset) -> None:
    required = action_grammar(tools, allowed=["math.calculate"], answer=None)
    assert not accepts(loaded, required, json.dumps({"answer": "84"}))
    assert not accepts(loaded, required, sql("SELECT COUNT(*) FROM orders"))
    quoted = action_grammar(tools, answer=["84", "South: 30902"])
    assert accepts(loaded, quoted, json.dumps({"answer": "South: 30902"}))
    assert not accepts(loaded, quoted, json.dumps({"answer": "86"})), "only what a tool returned"


def test_plans_and_syntheses(loaded: Loaded, tools: Toolset) -> None:
    plan = plan_grammar(tools, max_steps=2)
    step = {
        "description": "count",
        "tool": "sql.query",
        "arguments": {"query": "SELECT COUNT(*) FROM orders"},
    }
    assert accepts(loaded, plan, json.dumps({"steps": [step]}))
    assert accepts(loaded, plan, json.dumps({"steps": [step, {"description": "think"}]}))
    assert not accepts(loaded, plan, json.dumps({"steps": [step, step, step]})), "more than max_steps"
    choice = choice_grammar(["East: 1", "South: 2"], most=2)
    assert accepts(loaded, choice, "South: 2") and accepts(loaded, choice, "East: 1\nSouth: 2")
    assert not accepts(loaded, choice, "West: 3")


def test_any_tool_schema_becomes_a_grammar_llama_cpp_accepts(loaded: Loaded) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"enum": ["c", "f"]},
            "days": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "where": {"$ref": "#/$defs/Place"},
            "either": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        },
        "required": ["city", "unit"],
        "$defs": {
            "Place": {"type": "object", "properties": {"lat": {"type": "number"}}, "required": ["lat"]}
        },
    }
    grammar = schema_grammar(schema)
    assert accepts(loaded, grammar, json.dumps({"city": "Oslo", "unit": "c"}))
    value = {"city": "Oslo", "unit": "f", "days": 3, "tags": ["a"], "where": {"lat": 59.9}, "either": None}
    assert accepts(loaded, grammar, json.dumps(value))
    assert not accepts(loaded, grammar, json.dumps({"city": "Oslo", "unit": "k"}))


def generated(loaded: Loaded, grammar: str, prompt: str) -> Iterator[dict[str, Any]]:
    job = Job(
        messages=[{"role": "user", "content": prompt}], max_tokens=200, temperature=0.8, grammar=grammar
    )
    return generate(LocalModel().spec(), job, threading.Event())


def test_what_the_model_writes_under_the_grammar_is_valid_json(loaded: Loaded, tools: Toolset) -> None:
    """Sampled, not greedy, and asked for several lines: the action still parses and stops itself."""
    grammar = action_grammar(tools, allowed=[], answer="free")
    for prompt in ["Write a poem of four lines about the sea.", 'Say "hello" on two lines.']:
        items = list(generated(loaded, grammar, prompt))
        text = "".join(item.get("text", "") for item in items)
        assert items[-1]["done"]["finish_reason"] == "stop", text
        assert set(json.loads(text)) == {"answer"}
