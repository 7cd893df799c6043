"""Web-agent programs (Synapse style): short Python against an `agent` API, read from the AST, never run.

A program is a list of statements such as

    # like every post of the user, then submit
    agent.click_xpath("//span[text()='@ada']/../../div[@class='controls']/span[@class='like']")
    offset = 5 - 8
    key = 'arrowleft' if offset < 0 else 'arrowright'
    for _ in range(abs(offset)):
        agent.press(key)
    for word in ['alpha', 'beta']:
        agent.click_xpath(f"//label[text()='{word}']/input")

Only a whitelist is interpreted: calls of the five agent methods (as statements), assignments to
plain names, `for <name> in range(...)` or over a list, tuple or string, `if`/`elif`/`else`, `pass`,
and expressions built from literals (numbers, strings, lists, tuples, None), names, arithmetic,
comparisons, `and`/`or`/`not`, conditional expressions, indexing and slicing, f-strings (with short
format specs) and the builtins `str int float len abs min max round`. These are the constructs of
Synapse's own MiniWob++ exemplar programs (search-engine, use-slider, use-spinner) and the natural
ways to write the rest. Anything else (imports, `while`, other attributes or calls, `def`, ...) is
refused before the browser sees an action.

The interpreter runs in the job's process, so it works under a budget, each overrun its own error
class: the program's size (`too_large`: source characters, AST nodes, nesting depth), the text it
builds (`text_limit`: one string, or all strings built together) and its work (`cpu_limit`:
statements executed, expressions evaluated, CPU seconds of this thread). The result is a flat list
of `Action`s, bounded in number and size, so the browser only ever replays data.
"""

from __future__ import annotations

import ast
import operator
import re
import time
import warnings
from typing import Any, Callable

from envisions_flow.environments.web_actions import (  # the vocabulary the interpreter enforces
    Action, BAD_KEY, CPU_LIMIT, CPU_S, FORBIDDEN, KEYS, LIMIT, MAX_AST_NODES, MAX_DEPTH, MAX_EVALUATIONS, MAX_INT,
    MAX_ITEMS, MAX_RANGE, MAX_SOURCE_CHARS, MAX_STEPS, MAX_TEXT, MAX_TEXT_TOTAL, METHODS, NO_PROGRAM, PARAMETERS,
    ProgramError, RUNTIME, SYNTAX, TEXT_LIMIT, TOO_LARGE,
)

_FORMAT_SPEC = re.compile(r"[<>^=]?[-+ ]?#?0?\d{0,2}(\.\d{1,2})?[bcdeEfFgGnosxX%]?")
_NUMBER = (int, float, bool)
_SCALAR = (str, int, float, bool, type(None))
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}


def parse_source(source: str) -> ast.Module:
    """`ast.parse`, without the warnings Python gives valid source as it parses (`1if`, `"\\d"`): a policy's
    programs hold many, the verdict is the interpreter's, and a warning per sample would fill the job's log."""
    with warnings.catch_warnings(action="ignore"):
        return ast.parse(source)


def parse_program(source: str, max_actions: int = 50, cpu_s: float = CPU_S) -> list[Action]:
    """The actions a program performs, or ProgramError(error class, why)."""
    if not source.strip():
        raise ProgramError(NO_PROGRAM, "empty program")
    if len(source) > MAX_SOURCE_CHARS:
        raise ProgramError(TOO_LARGE, f"program longer than {MAX_SOURCE_CHARS} characters")
    try:
        tree = parse_source(source)
    except (RecursionError, MemoryError) as error:
        raise ProgramError(TOO_LARGE, f"nested too deeply to parse ({type(error).__name__})") from None
    except (SyntaxError, ValueError) as error:
        raise ProgramError(SYNTAX, f"{type(error).__name__}: {error}") from None
    _check_size(tree)
    interpreter = _Interpreter(max_actions, time.thread_time() + cpu_s)
    interpreter.block(tree.body)
    if not interpreter.actions:
        raise ProgramError(NO_PROGRAM, "the program performs no action")
    return interpreter.actions


def _check_size(tree: ast.AST) -> None:
    """Refuse a tree with more than MAX_AST_NODES nodes or nested deeper than MAX_DEPTH, before any work."""
    count, stack = 0, [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_AST_NODES:
            raise ProgramError(TOO_LARGE, f"more than {MAX_AST_NODES} syntax nodes")
        if depth > MAX_DEPTH:
            raise ProgramError(TOO_LARGE, f"line {getattr(node, 'lineno', '?')}: nested deeper than {MAX_DEPTH}")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


class _Interpreter:
    def __init__(self, max_actions: int, deadline: float):
        self.max_actions, self.deadline = max_actions, deadline
        self.actions: list[Action] = []
        self.names: dict[str, Any] = {}
        self.steps = self.evaluations = self.text_built = 0

    def spend(self) -> None:
        """One expression evaluated: the count, and every 256 of them the CPU clock."""
        self.evaluations += 1
        if self.evaluations > MAX_EVALUATIONS:
            raise ProgramError(CPU_LIMIT, f"more than {MAX_EVALUATIONS} expressions evaluated")
        if self.evaluations % 256 == 0:
            self.check_clock()

    def check_clock(self) -> None:
        if time.thread_time() > self.deadline:
            raise ProgramError(CPU_LIMIT, "interpreting took more CPU time than allowed")

    # ---- statements -------------------------------------------------------------------------

    def block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise ProgramError(CPU_LIMIT, f"more than {MAX_STEPS} statements executed")
            self.check_clock()
            self.statement(statement)

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Expr):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return  # a docstring-like comment
            if not isinstance(node.value, ast.Call):
                raise _forbidden(node, "a bare expression")
            self.agent_call(node.value)
        elif isinstance(node, ast.Assign):
            if len(node.targets) != 1:
                raise _forbidden(node, "chained assignment")
            self.assign(node.targets[0], self.value(node.value))
        elif isinstance(node, ast.AugAssign):
            name = _target_name(node.target)
            if name not in self.names:
                raise ProgramError(RUNTIME, f"line {node.lineno}: name {name!r} is not defined")
            self.assign(node.target, self.binop(node.op, self.names[name], self.value(node.value), node))
        elif isinstance(node, ast.For):
            self.loop(node)
        elif isinstance(node, ast.If):
            self.block(node.body if self.value(node.test) else node.orelse)
        elif not isinstance(node, ast.Pass):
            raise _forbidden(node, f"`{type(node).__name__}` statements")

    def assign(self, target: ast.expr, value: Any) -> None:
        self.names[_target_name(target)] = value

    def loop(self, node: ast.For) -> None:
        if node.orelse:
            raise _forbidden(node, "for ... else")
        call = node.iter
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "range":
            if call.keywords or not 1 <= len(call.args) <= 3:
                raise ProgramError(RUNTIME, f"line {node.lineno}: range() takes one to three integers")
            bounds = [self.value(arg) for arg in call.args]
            if not all(type(bound) is int for bound in bounds):
                raise ProgramError(RUNTIME, f"line {node.lineno}: range() takes integers")
            try:
                values: Any = range(*bounds)
            except ValueError as error:
                raise ProgramError(RUNTIME, f"line {node.lineno}: {error}") from None
        else:
            values = self.value(call)
            if not isinstance(values, (list, tuple, str)):
                raise ProgramError(RUNTIME, f"line {node.lineno}: a loop runs over range(), a list or a string")
        if len(values) > MAX_RANGE:
            raise ProgramError(LIMIT, f"line {node.lineno}: a loop of {len(values)} > {MAX_RANGE} iterations")
        for value in values:
            self.assign(node.target, value)
            self.block(node.body)

    def agent_call(self, call: ast.Call) -> None:
        func = call.func
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "agent"):
            raise _forbidden(call, f"calling {ast.unparse(func)!r} (only agent.<method>(...) statements act)")
        if func.attr not in METHODS:
            raise _forbidden(call, f"agent.{func.attr} (known: {', '.join(METHODS)})")
        arguments = call.args + [keyword.value for keyword in call.keywords]
        if (len(arguments) != 1 or isinstance(arguments[0], ast.Starred)
                or any(keyword.arg != PARAMETERS[func.attr] for keyword in call.keywords)):
            raise ProgramError(RUNTIME, f"line {call.lineno}: agent.{func.attr} takes exactly one argument "
                                        f"({PARAMETERS[func.attr]})")
        argument = self.value(arguments[0])
        if func.attr == "type" and type(argument) in (int, float):
            argument = str(argument)
        if not isinstance(argument, str):
            raise ProgramError(RUNTIME, f"line {call.lineno}: agent.{func.attr} needs a string")
        if func.attr == "press":
            key = KEYS.get(argument.strip().lower().replace(" ", ""))
            if key is None:
                raise ProgramError(BAD_KEY, f"line {call.lineno}: unknown key {argument[:40]!r}")
            argument = key
        elif func.attr != "type" and not argument.strip():
            raise ProgramError(RUNTIME, f"line {call.lineno}: empty xpath")
        if len(self.actions) >= self.max_actions:
            raise ProgramError(LIMIT, f"more than {self.max_actions} actions")
        self.actions.append(Action(func.attr, argument))

    # ---- expressions ------------------------------------------------------------------------

    def value(self, node: ast.expr) -> Any:
        self.spend()
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, _SCALAR):
                raise _forbidden(node, f"{type(node.value).__name__} literals")
            return self.bounded(node.value, node, built=False)
        if isinstance(node, ast.Name):
            if node.id == "agent" or node.id in _BUILTINS or node.id == "range":
                raise _forbidden(node, f"using {node.id!r} as a value")
            if node.id not in self.names:
                raise ProgramError(RUNTIME, f"line {node.lineno}: name {node.id!r} is not defined")
            return self.names[node.id]
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.value(node.left), self.value(node.right), node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BoolOp):
            result = None
            for operand in node.values:  # short-circuit, returning the deciding operand as Python does
                result = self.value(operand)
                if bool(result) == isinstance(node.op, ast.Or):
                    break
            return result
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.IfExp):
            return self.value(node.body if self.value(node.test) else node.orelse)
        if isinstance(node, (ast.List, ast.Tuple)):
            if len(node.elts) > MAX_ITEMS:
                raise ProgramError(LIMIT, f"line {node.lineno}: more than {MAX_ITEMS} items")
            items = [self.value(item) for item in node.elts]
            if not all(isinstance(item, _SCALAR) for item in items):  # no nesting: str() of one stays small
                raise ProgramError(RUNTIME, f"line {node.lineno}: lists and tuples hold numbers and strings")
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.JoinedStr):
            return self.fstring(node)
        if isinstance(node, ast.Call):
            return self.builtin(node)
        raise _forbidden(node, f"`{type(node).__name__}` expressions")

    def unary(self, node: ast.UnaryOp) -> Any:
        operand = self.value(node.operand)
        if isinstance(node.op, ast.Not):
            return not operand
        if isinstance(node.op, (ast.USub, ast.UAdd)) and type(operand) in _NUMBER:
            return -operand if isinstance(node.op, ast.USub) else +operand
        raise ProgramError(RUNTIME, f"line {node.lineno}: {type(node.op).__name__} on {type(operand).__name__}")

    def compare(self, node: ast.Compare) -> bool:
        left = self.value(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.value(right_node)
            comparison = _COMPARE.get(type(op))
            if comparison is None:
                raise _forbidden(node, f"the {type(op).__name__} comparison")
            try:
                if not comparison(left, right):
                    return False
            except TypeError as error:
                raise ProgramError(RUNTIME, f"line {node.lineno}: {error}") from None
            left = right
        return True

    def subscript(self, node: ast.Subscript) -> Any:
        container = self.value(node.value)
        if not isinstance(container, (str, list, tuple)):
            raise ProgramError(RUNTIME, f"line {node.lineno}: cannot index {type(container).__name__}")
        if isinstance(node.slice, ast.Slice):
            parts = [None if part is None else self.value(part)
                     for part in (node.slice.lower, node.slice.upper, node.slice.step)]
            if not all(part is None or type(part) is int for part in parts) or parts[2] == 0:
                raise ProgramError(RUNTIME, f"line {node.lineno}: slices take integers (and a non-zero step)")
            return self.bounded(container[slice(*parts)], node)
        index = self.value(node.slice)
        if type(index) is not int:
            raise ProgramError(RUNTIME, f"line {node.lineno}: indices are integers")
        try:
            return container[index]
        except IndexError:
            raise ProgramError(RUNTIME, f"line {node.lineno}: index {index} out of range") from None

    def fstring(self, node: ast.JoinedStr) -> str:
        parts, length = [], 0
        for part in node.values:
            if isinstance(part, ast.Constant):
                text = str(part.value)
            elif isinstance(part, ast.FormattedValue):
                text = self.formatted(part)
            else:
                raise _forbidden(part, "this f-string part")
            length += len(text)
            if length > MAX_TEXT:  # checked while joining: the whole is never built
                raise ProgramError(TEXT_LIMIT, f"line {node.lineno}: a string longer than {MAX_TEXT} characters")
            parts.append(text)
        return self.bounded("".join(parts), node)

    def formatted(self, part: ast.FormattedValue) -> str:
        value = self.value(part.value)
        if part.conversion in (ord("r"), ord("a")):
            value = repr(value)
        elif part.conversion == ord("s"):
            value = str(value)
        spec = "" if part.format_spec is None else self.value(part.format_spec)
        if not (isinstance(spec, str) and _FORMAT_SPEC.fullmatch(spec)):
            raise _forbidden(part, f"the format spec {str(spec)[:20]!r} (width and precision up to 99)")
        try:
            return format(value, spec)
        except (TypeError, ValueError) as error:
            raise ProgramError(RUNTIME, f"line {part.lineno}: {error}") from None

    def builtin(self, node: ast.Call) -> Any:
        if not (isinstance(node.func, ast.Name) and node.func.id in _BUILTINS):
            raise _forbidden(node, f"calling {ast.unparse(node.func)!r} (allowed: {', '.join(_BUILTINS)})")
        if node.keywords or any(isinstance(arg, ast.Starred) for arg in node.args):
            raise ProgramError(RUNTIME, f"line {node.lineno}: {node.func.id}() takes positional arguments here")
        function, arities = _BUILTINS[node.func.id]
        if len(node.args) not in arities:
            raise ProgramError(RUNTIME, f"line {node.lineno}: {node.func.id}() takes {arities[0]}"
                                        f"{'' if len(arities) == 1 else ' or more'} argument(s) here")
        arguments = [self.value(arg) for arg in node.args]
        try:
            return self.bounded(function(*arguments), node)
        except (TypeError, ValueError, OverflowError) as error:
            raise ProgramError(RUNTIME, f"line {node.lineno}: {error}") from None

    def binop(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        operation = _BINOPS.get(type(op))
        if operation is None:
            raise _forbidden(node, f"the {type(op).__name__} operator")
        if isinstance(op, ast.Mod) and isinstance(left, str):
            raise _forbidden(node, "%-formatting")
        if isinstance(op, ast.Mult):
            sequence, times = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
            if isinstance(sequence, (str, list, tuple)) and type(times) in (int, bool):
                limit, error_class = (MAX_TEXT, TEXT_LIMIT) if isinstance(sequence, str) else (MAX_ITEMS, LIMIT)
                if len(sequence) * max(0, times) > limit:  # checked before the product is built
                    raise ProgramError(error_class, f"line {node.lineno}: a {type(sequence).__name__} "
                                                    f"longer than {limit}")
        try:
            return self.bounded(operation(left, right), node)
        except (TypeError, ZeroDivisionError, OverflowError) as error:
            raise ProgramError(RUNTIME, f"line {node.lineno}: {error}") from None

    def bounded(self, value: Any, node: ast.AST, built: bool = True) -> Any:
        """`value` if it is within the limits; a string a program built counts against MAX_TEXT_TOTAL."""
        line = getattr(node, "lineno", "?")
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise ProgramError(TEXT_LIMIT, f"line {line}: a string longer than {MAX_TEXT} characters")
            self.text_built += len(value) if built else 0
            if self.text_built > MAX_TEXT_TOTAL:
                raise ProgramError(TEXT_LIMIT, f"line {line}: more than {MAX_TEXT_TOTAL} characters of text built")
        elif isinstance(value, (list, tuple)) and len(value) > MAX_ITEMS:
            raise ProgramError(LIMIT, f"line {line}: more than {MAX_ITEMS} items")
        elif type(value) is int and abs(value) > MAX_INT:
            raise ProgramError(LIMIT, f"line {line}: a number beyond {MAX_INT}")
        return value


def _round(number: Any, digits: Any = None) -> Any:
    if digits is not None and not (type(digits) is int and abs(digits) <= 15):
        raise ValueError("round() takes at most 15 digits here")
    return round(number, digits)


def _numbers(*arguments: Any) -> Any:
    """min/max over numbers or strings (one list, or several values), never over anything else."""
    values = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], (list, tuple)) else arguments
    if not values or not all(isinstance(value, (str, *_NUMBER)) for value in values):
        raise TypeError("min() and max() take numbers or strings")
    return values


# name → (function, numbers of arguments it takes)
_BUILTINS: dict[str, tuple[Callable[..., Any], tuple[int, ...]]] = {
    "str": (str, (1,)), "int": (int, (1,)), "float": (float, (1,)), "len": (len, (1,)), "abs": (abs, (1,)),
    "round": (_round, (1, 2)),
    "min": (lambda *values: min(_numbers(*values)), tuple(range(1, MAX_ITEMS + 1))),
    "max": (lambda *values: max(_numbers(*values)), tuple(range(1, MAX_ITEMS + 1))),
}


def _target_name(target: ast.expr) -> str:
    if not isinstance(target, ast.Name):
        raise _forbidden(target, f"assigning to `{type(target).__name__}`")
    if target.id == "agent" or target.id.startswith("__") or target.id in _BUILTINS or target.id == "range":
        raise _forbidden(target, f"assigning to {target.id!r}")
    return target.id


def _forbidden(node: ast.AST, what: str) -> ProgramError:
    return ProgramError(FORBIDDEN, f"line {getattr(node, 'lineno', '?')}: not allowed: {what}")
