"""Extension points: a plugin package installed beside agentstage adds a provider kind and a tool
through entry points, and tools made with @tool behave like built-ins."""

from __future__ import annotations

import asyncio
import datetime
import enum
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from agentstage.core.messages import ToolCall
from agentstage.core.tools import ToolContext, Toolset
from agentstage.errors import ConfigError, ToolArgumentError
from agentstage.plugins import tool
from conftest import Cli

PLUGIN = Path(__file__).parent / "plugins" / "agentstage-echo"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed (from tests/plugins) into its own directory, put on PYTHONPATH."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(PLUGIN)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    return target


def test_a_plugin_adds_a_provider_and_a_tool(cli: Cli, plugin_site: Path) -> None:
    cli.env["PYTHONPATH"] = str(plugin_site)
    cli.configure(
        {
            "providers": {"shout": {"type": "echo"}},
            "profiles": {"echo": {"description": "from a plugin", "chain": [{"provider": "shout"}]}},
        }
    )
    listed = cli("tool", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "word_count:v1" in {t["id"] for t in json.loads(listed.stdout)}
    profiles = cli("profile", "list", "--json")
    assert profiles.returncode == 0, profiles.stderr
    assert "echo" in profiles.stdout and "shout" in profiles.stdout
    counted = cli("tool", "test", "word_count", "--input", '{"text": "one two three"}')
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == 3
    answered = cli("run", "hello there", "--profile", "echo", "--mode", "chat", "--output", "json")
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["output"] == "ECHO: HELLO THERE"


def test_a_plugin_cannot_take_a_built_in_tools_name_and_says_why_it_is_skipped(
    cli: Cli, plugin_site: Path
) -> None:
    cli.env["PYTHONPATH"] = str(plugin_site)
    cli.script({"responses": [{"text": "ok"}]})
    listed = cli("tool", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    ids = {t["id"] for t in json.loads(listed.stdout)}
    assert "math.calculate:v1" in ids and "math.calculate:v99" not in ids and "word_count:v1" in ids
    assert "char_count:v1" in ids  # the refused tool's neighbour in the same entry point is kept
    assert "'math.calculate' is the name of a built-in tool" in listed.stderr
    assert "returned int, not a tool or a list of tools" in listed.stderr
    computed = cli("tool", "test", "math.calculate", "--input", '{"expression": "6*7"}')
    assert computed.returncode == 0 and "42" in computed.stdout and "HIJACKED" not in computed.stdout


def test_a_plugin_provider_its_own_check_refuses_is_skipped_like_one_without_its_key(
    cli: Cli, plugin_site: Path
) -> None:
    cli.env["PYTHONPATH"] = str(plugin_site)
    cli.configure(
        {
            "providers": {
                "quiet": {"type": "echo", "loud": False},  # EchoKind.check: "echo needs to be loud"
                "s": {"type": "scripted", "script": {"responses": [{"text": "From the fallback."}]}},
            },
            "profiles": {
                "fallback": {"chain": [{"provider": "quiet"}, {"provider": "s"}]},
                "alone": {"chain": [{"provider": "quiet"}]},
            },
        }
    )
    done = cli("run", "hi", "-m", "chat", "--profile", "fallback")
    assert done.returncode == 0 and done.stdout == "From the fallback.\n", done.stderr
    assert "⇢ skipping quiet: echo needs to be loud; using s" in done.stderr.splitlines()
    refused = cli("run", "hi", "-m", "chat", "--profile", "alone")
    assert refused.returncode == 2 and refused.stdout == ""
    assert (
        "profile 'alone' has no usable provider (quiet: echo needs to be loud); make one usable or choose"
        in refused.stderr
    )


def test_without_the_plugin_its_provider_type_is_refused_clearly(cli: Cli) -> None:
    cli.configure({"providers": {"shout": {"type": "echo"}}})
    done = cli("profile", "list")
    assert done.returncode == 2
    assert "unknown type 'echo'" in done.stderr and "known: local, openai, anthropic, scripted" in done.stderr


@tool(category="text", version="v2")
def words(
    text: Annotated[str, Field(description="The text to split.")], limit: int = 10, *, upper: bool = False
) -> list[str]:
    """Split a text into words.

    The rest of this docstring is not part of the description."""
    found = text.split()[:limit]
    return [w.upper() for w in found] if upper else found


def test_tool_schema_and_description_come_from_the_function() -> None:
    assert (words.name, words.version, words.category) == ("words", "v2", "text")
    assert words.description == "Split a text into words."
    schema = words.parameters
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"]["description"] == "The text to split."
    assert schema["properties"]["limit"]["default"] == 10
    assert words("a b c", limit=2) == ["a", "b"]  # still callable as a function


def test_tool_arguments_are_validated_strictly() -> None:
    assert words.validate_arguments({"text": "a b"}) == {"text": "a b", "limit": 10, "upper": False}
    with pytest.raises(ToolArgumentError) as refused:
        words.validate_arguments({"text": "a b", "limit": "3"})
    assert refused.value.details["errors"][0]["field"] == "limit"
    with pytest.raises(ToolArgumentError):
        words.validate_arguments({"text": "a", "colour": "red"})


@pytest.mark.anyio
async def test_plain_functions_run_off_the_event_loop_and_get_their_context() -> None:
    seen: dict[str, object] = {}

    @tool
    def where(note: str, context: ToolContext) -> str:
        """Report where it ran."""
        seen["thread"] = threading.current_thread() is threading.main_thread()
        seen["run_id"] = context.run_id
        return note

    @tool
    async def later(seconds: float) -> str:
        """Wait, on the event loop."""
        await asyncio.sleep(seconds)
        return "done"

    toolset = Toolset([where, later], call_timeout=5)
    outcome = await toolset.execute(
        ToolCall(name="where", arguments={"note": "hi"}), ToolContext(run_id="r-1")
    )
    assert outcome.output == "hi" and seen == {"thread": False, "run_id": "r-1"}
    assert "context" not in where.parameters["properties"]
    done = await toolset.execute(ToolCall(name="later", arguments={"seconds": 0.01}), ToolContext(run_id="r"))
    assert done.output == "done"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Point(BaseModel):
    x: float
    y: float


@tool
def plot(
    colour: Colour, day: datetime.date, size: tuple[int, int], at: Point, tags: list[str] | None = None
) -> Point:
    """Place a point."""
    return Point(x=at.x * size[0], y=at.y * size[1])


def test_arguments_are_read_as_json_into_the_types_the_function_declares() -> None:
    """A model sends JSON: a date or an enum member as the string the schema names, a tuple as an
    array. Strict validation of Python values would refuse all three."""
    schema = plot.parameters
    assert schema["properties"]["day"] == {"format": "date", "title": "Day", "type": "string"}
    sent = json.loads('{"colour": "blue", "day": "2026-12-03", "size": [3, 4], "at": {"x": 1, "y": 2.5}}')
    assert plot.validate_arguments(sent) == {
        "colour": Colour.BLUE,
        "day": datetime.date(2026, 12, 3),
        "size": (3, 4),
        "at": Point(x=1, y=2.5),
        "tags": None,
    }
    wrongs: list[tuple[dict[str, object], str]] = [
        ({"colour": "green"}, "colour"),
        ({"day": "3 December"}, "day"),
        ({"size": ["3", 4]}, "size.0"),
        ({"at": {"x": "1", "y": 2}}, "at.x"),
    ]
    for wrong, field in wrongs:
        with pytest.raises(ToolArgumentError) as refused:
            plot.validate_arguments({**sent, **wrong})
        assert refused.value.details["errors"][0]["field"] == field


@pytest.mark.anyio
async def test_a_function_tool_runs_with_json_arguments_and_returns_json() -> None:
    toolset = Toolset([plot], call_timeout=5)
    arguments = {"colour": "red", "day": "2026-12-03", "size": [2, 2], "at": {"x": 1.5, "y": 2}}
    outcome = await toolset.execute(ToolCall(name="plot", arguments=arguments), ToolContext(run_id="r"))
    assert outcome.error is None, outcome.error
    assert outcome.output == {"x": 3.0, "y": 4.0}


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("my tool!", "letters, digits"),
        (".hidden", "letters, digits"),
        ("text..count", "letters, digits"),
        ("text__count", "'__' is how a '.' is sent"),
        ("a" * 60 + ".b.c", "longer than the 64 characters"),
    ],
)
def test_a_name_no_model_api_accepts_is_refused_when_the_tool_is_made(name: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):

        @tool(name=name)
        def anything(text: str) -> str:
            """Echo."""
            return text


def test_names_with_dots_dashes_and_digits_are_accepted() -> None:
    @tool(name="text-tools.count_words2")
    def count(text: str) -> int:
        """Count words."""
        return len(text.split())

    assert count.name == "text-tools.count_words2"


def test_a_generator_is_refused_as_a_tool() -> None:
    with pytest.raises(ConfigError, match="a generator cannot be a tool"):

        @tool
        async def numbers(up_to: int) -> AsyncIterator[int]:
            """Count up."""
            for number in range(up_to):
                yield number


def test_a_function_without_type_hints_is_refused() -> None:
    def untyped(text):  # type: ignore[no-untyped-def]
        return text

    with pytest.raises(ConfigError, match="needs a type hint"):
        tool(untyped)
