"""Custom reward formulas over criterion scores, e.g. `min(grounded, accurate) * (0.5 + 0.5 * concise)`.

The formula is parsed, never evaluated as Python: only numbers, criterion names, + - * / ^ (power), unary
minus, and the functions OpenAI's multi-grader formulas allow (min max abs floor ceil exp sqrt log). Anything
else is refused when the rubric is loaded, with the offending piece named.
"""
from __future__ import annotations

import ast
import math
import operator

FUNCS = {"min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
         "sqrt": math.sqrt, "log": math.log}
BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.Pow: operator.pow, ast.BitXor: operator.pow}


class FormulaError(ValueError):
    pass


MAX_LENGTH = 2000  # a longer formula is not a reward a person wrote; it could also nest past Python's stack


def parse(text: str, names: set[str]) -> ast.Expression:
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"formula is {len(text)} characters long; at most {MAX_LENGTH}")
    try:
        tree = ast.parse(text.replace("^", "**"), mode="eval")
    except SyntaxError as e:
        raise FormulaError(f"formula does not parse: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:  # NUL bytes; nesting past the parser's stack
        raise FormulaError(f"formula does not parse: {type(e).__name__}") from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, ast.operator, ast.unaryop)):
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in BINOPS:
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            continue
        if isinstance(node, ast.Name):
            if node.id not in names and node.id not in FUNCS:
                raise FormulaError(f"formula names '{node.id}', which is not a criterion "
                                   f"(criteria: {', '.join(sorted(names))})")
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCS \
                and not node.keywords:
            continue
        raise FormulaError(f"formula may not contain '{ast.unparse(node)}'")
    return tree


def real(v) -> float:
    """v, refused (FormulaError, a ValueError) when it is no real number: Python gives a complex number for a
    negative number to a fractional power, and NaN for inf - inf; min and max would raise on the first and pass
    the second on."""
    if isinstance(v, complex) or v != v:
        raise FormulaError("the formula's value is not a real number")
    return v


def evaluate(tree: ast.Expression, values: dict[str, float]) -> float:
    """The formula's value; a ValueError (a math domain error, a value that is not real), ZeroDivisionError or
    OverflowError (ArithmeticError) when it has none: the caller decides what that edge case is worth."""
    def ev(n):
        if isinstance(n, ast.Expression):
            return ev(n.body)
        if isinstance(n, ast.Constant):
            return float(n.value)
        if isinstance(n, ast.Name):
            return values[n.id]
        if isinstance(n, ast.UnaryOp):
            v = ev(n.operand)
            return -v if isinstance(n.op, ast.USub) else v
        if isinstance(n, ast.BinOp):
            return real(BINOPS[type(n.op)](ev(n.left), ev(n.right)))
        if isinstance(n, ast.Call):
            return real(float(FUNCS[n.func.id](*[ev(a) for a in n.args])))
        raise FormulaError(f"cannot evaluate {ast.unparse(n)}")
    return ev(tree)
