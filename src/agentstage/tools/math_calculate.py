"""``math.calculate:v1`` — arithmetic and common functions through a safe AST evaluator.

Only numbers, arithmetic operators, a fixed set of functions and constants are allowed; names,
attributes, calls to anything else are refused. ``eval`` is never used. The size of every
intermediate integer is bounded *before* it is computed (a power or a product that would exceed
:data:`MAX_RESULT_DIGITS` is refused with ``tool_limit``), so no expression can keep the CPU busy
for long or exhaust memory: ``(10**10000)**1000`` is refused at once instead of computed.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentstage.core.guidance import StringGrammar, ToolExample, literal
from agentstage.core.tools import ArgumentsTool, ToolContext
from agentstage.errors import ToolError

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_RESULT_DIGITS = 3_000
MAX_RESULT_BITS = int(MAX_RESULT_DIGITS / math.log10(2))
MAX_FACTORIAL = 1_000
MAX_LENGTH = 1_000


def _too_large(bits: float) -> ToolError:
    digits = int(bits * math.log10(2)) + 1
    return ToolError(
        f"the result would have about {digits:,} digits, over the limit of {MAX_RESULT_DIGITS:,}",
        code="tool_limit",
    )


def check_power(base: Any, exponent: Any) -> None:
    """Refuse an integer power whose result would be too large, before computing it."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        bits = math.log2(abs(base)) * exponent
        if bits > MAX_RESULT_BITS:
            raise _too_large(bits)


def check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        bits = abs(left).bit_length() + abs(right).bit_length()
        if bits > MAX_RESULT_BITS + 1:
            raise _too_large(bits - 1)


def _checked_pow(*arguments: Any) -> Any:
    if len(arguments) == 2:
        check_power(*arguments)
    return pow(*arguments)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs, "round": round, "min": min, "max": max, "pow": _checked_pow,
    "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "floor": math.floor, "ceil": math.ceil, "factorial": math.factorial,
}  # fmt: skip
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


class Evaluator:
    def __init__(self, variables: dict[str, float]):
        self.names = {**CONSTANTS, **variables}

    def evaluate(self, node: ast.AST) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise ToolError(
                f"{type(node).__name__} is not allowed in an expression", code="invalid_expression"
            )
        return method(node)

    def _Expression(self, node: ast.Expression) -> Any:
        return self.evaluate(node.body)

    def _Constant(self, node: ast.Constant) -> Any:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, got {node.value!r}", code="invalid_expression")
        return node.value

    def _Name(self, node: ast.Name) -> Any:
        if node.id not in self.names:
            raise ToolError(f"unknown name {node.id!r}", code="invalid_expression")
        return self.names[node.id]

    def _UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not allowed", code="invalid_expression")
        return op(self.evaluate(node.operand))

    def _BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ToolError(f"operator {type(node.op).__name__} is not allowed", code="invalid_expression")
        left, right = self.evaluate(node.left), self.evaluate(node.right)
        if op is operator.pow:
            check_power(left, right)
        elif op is operator.mul:
            check_product(left, right)
        return op(left, right)

    def _Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ToolError(
                f"only these functions are allowed: {', '.join(FUNCTIONS)}", code="invalid_expression"
            )
        arguments = [self.evaluate(arg) for arg in node.args]
        if node.func.id == "factorial" and arguments and arguments[0] > MAX_FACTORIAL:
            raise ToolError(
                f"factorial argument is too large (limit {MAX_FACTORIAL})", code="invalid_expression"
            )
        return FUNCTIONS[node.func.id](*arguments)


def calculate(expression: str, variables: dict[str, float] | None = None) -> float | int:
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"expression is longer than {MAX_LENGTH} characters", code="invalid_expression")
    text = expression.replace("^", "**").replace("\u00d7", "*").replace("\u00f7", "/")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        raise ToolError(f"cannot parse expression {expression!r}", code="invalid_expression") from None
    try:
        result = Evaluator(variables or {}).evaluate(tree)
    except RecursionError:
        raise ToolError("the expression is nested too deeply", code="invalid_expression") from None
    except ZeroDivisionError:
        raise ToolError(f"division by zero in {expression!r}", code="invalid_expression") from None
    except (ValueError, OverflowError, TypeError) as error:
        raise ToolError(f"cannot evaluate {expression!r}: {error}", code="invalid_expression") from None
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        return int(result)
    return result  # type: ignore[no-any-return]


class CalculateArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(
        description="An arithmetic expression, e.g. '(17 * 23) + sqrt(16)'.", min_length=1
    )
    variables: dict[str, float] = Field(
        default_factory=dict, description="Values for names in the expression."
    )


class MathCalculate(ArgumentsTool):
    name: ClassVar[str] = "math.calculate"
    version: ClassVar[str] = "v1"
    category: ClassVar[str] = "math"
    description: ClassVar[str] = (
        "Evaluate an arithmetic expression (+ - * / // % ** and sqrt, log, sin, cos, round, min, max, "
        "pi, e) and return the number."
    )
    keywords: ClassVar[tuple[str, ...]] = (
        "calculate", "compute", "multiply", "multiplied", "divide", "divided", "math", "percent",
        "plus", "minus", "times", "squared", "cubed", "sqrt", "root", "power", "factorial",
        "arithmetic", "product", "quotient", "remainder", "modulo", "add", "subtract", "sum",
        "difference", "half", "double", "twice",
    )  # fmt: skip
    Arguments = CalculateArguments

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        return {"result": calculate(arguments["expression"], arguments["variables"])}

    def action_examples(self) -> list[ToolExample]:
        """How everyday phrasing becomes an expression, for models that learn from examples."""
        return [
            ToolExample(input=question, tool=self.name, arguments={"expression": expression})
            for question, expression in EXAMPLES
        ]

    def example_output(self, arguments: dict[str, Any]) -> Any:
        return {"result": calculate(arguments["expression"])}

    def string_grammars(self, prefix: str) -> dict[str, StringGrammar]:
        """Only well-formed expressions: numbers, operators, parentheses, allowed functions."""
        functions = " | ".join(literal(name) for name in FUNCTIONS)
        constants = " | ".join(literal(name) for name in CONSTANTS)
        p = prefix
        rules = {
            f"{p}expr": f"{p}term ({p}op {p}term){{0,11}}",
            f"{p}op": '" + " | " - " | " * " | " / " | " // " | " % " | " ** "',
            f"{p}term": f'"-"? ({p}number | {constants} | "(" {p}expr ")" | ({functions}) "(" {p}expr (", " {p}expr){{0,3}} ")")',
            f"{p}number": '[0-9] [0-9]{0,14} ("." [0-9] [0-9]{0,9})?',
        }
        return {"expression": StringGrammar(root=f"{p}expr", rules=rules)}


EXAMPLES = (
    ("What is 15 plus 27?", "15 + 27"),
    ("Add 120 and 35", "120 + 35"),
    ("Subtract 18 from 50", "50 - 18"),
    ("What is 9 times 8?", "9 * 8"),
    ("Calculate 144 divided by 12", "144 / 12"),
    ("What is 100 minus 37?", "100 - 37"),
    ("What is 2 to the power of 10?", "2 ** 10"),
    ("What is the square root of 81?", "sqrt(81)"),
    ("What is 15% of 240?", "240 * 15 / 100"),
    ("What is 7 squared?", "7 ** 2"),
    ("Compute (3 + 4) * 5", "(3 + 4) * 5"),
    ("What is the average of 4, 8 and 15?", "(4 + 8 + 15) / 3"),
    ("What is 1234 multiplied by 5678?", "1234 * 5678"),
    ("Round 3.14159 to 2 decimal places", "round(3.14159, 2)"),
    ("What is 5 factorial?", "factorial(5)"),
)
