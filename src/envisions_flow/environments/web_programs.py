"""Web-agent programs (Synapse style): short Python against an `agent` API, read from the AST, never run.

A program is a list of statements such as

    # click the submit button, then type into the first text box
    agent.click_xpath("//button[text()='submit']")
    for _ in range(3):
        agent.press("backspace")
    name = "Ada"
    agent.type(name + " Lovelace")

Only a whitelist is interpreted: calls of the five agent methods (as statements), assignments to
plain names, `for <name> in range(...)` with a small bound, `pass`, and expressions built from
literals, names, + - * / // %, unary minus, f-strings and `str()`, `int()`, `len()`. Anything
else (imports, `while`, other attributes or calls, `def`, `if`, ...) is refused before the
browser sees an action. The result is a flat list of `Action`s, bounded in number and size, so
the browser only ever replays data.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

# Error classes (base.NO_PROGRAM is "no_program"; the browser adds its own in environments/web.py).
SYNTAX = "syntax"
FORBIDDEN = "forbidden"
LIMIT = "limit"
RUNTIME = "runtime"
BAD_KEY = "bad_key"
NO_PROGRAM = "no_program"

METHODS = ("click_xpath", "type", "press", "click_option", "movemouse")

# Key names a program may press, mapped to Playwright's names ("command" is Ctrl on Linux).
KEYS = {
    "enter": "Enter", "return": "Enter", "space": " ", "tab": "Tab", "backspace": "Backspace",
    "delete": "Delete", "escape": "Escape", "home": "Home", "end": "End",
    "arrowleft": "ArrowLeft", "arrowright": "ArrowRight", "arrowup": "ArrowUp", "arrowdown": "ArrowDown",
    "left": "ArrowLeft", "right": "ArrowRight", "up": "ArrowUp", "down": "ArrowDown",
    **{f"{modifier}+{letter}": f"ControlOrMeta+{letter}"
       for modifier in ("command", "ctrl", "control") for letter in "acvx"},
}

MAX_SOURCE_CHARS = 20_000
MAX_TEXT = 1_000          # longest string a program may build (a typed text, an xpath)
MAX_RANGE = 100           # largest range() a loop may run
MAX_STEPS = 5_000         # statements executed in all (loops included)
MAX_INT = 10**12

_BUILTINS = {"str": str, "int": int, "len": len}
_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b}


@dataclass(frozen=True)
class Action:
    """One browser step: `kind` is an agent method, `arg` its xpath, text or Playwright key."""

    kind: str
    arg: str


# Playwright key name → the program's name for it (the first listed), to write an Action back as a call.
_KEY_NAMES = {playwright: name for name, playwright in reversed(list(KEYS.items()))}


def action_source(action: Action) -> str:
    """The one agent call that performs `action`: how a whole program becomes step-mode actions."""
    argument = _KEY_NAMES[action.arg] if action.kind == "press" else action.arg
    return f"agent.{action.kind}({argument!r})"


class ProgramError(Exception):
    """A program the interpreter refuses, with the error class it counts as."""

    def __init__(self, error_class: str, message: str):
        super().__init__(message)
        self.error_class = error_class


def parse_program(source: str, max_actions: int = 50) -> list[Action]:
    """The actions a program performs, or ProgramError(error class, why)."""
    if not source.strip():
        raise ProgramError(NO_PROGRAM, "empty program")
    if len(source) > MAX_SOURCE_CHARS:
        raise ProgramError(LIMIT, f"program longer than {MAX_SOURCE_CHARS} characters")
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise ProgramError(SYNTAX, f"{type(error).__name__}: {error}") from None
    interpreter = _Interpreter(max_actions)
    try:
        interpreter.block(tree.body)
    except RecursionError:
        raise ProgramError(LIMIT, "expression nested too deeply") from None
    if not interpreter.actions:
        raise ProgramError(NO_PROGRAM, "the program performs no action")
    return interpreter.actions


class _Interpreter:
    def __init__(self, max_actions: int):
        self.max_actions = max_actions
        self.actions: list[Action] = []
        self.names: dict[str, Any] = {}
        self.steps = 0

    # ---- statements -------------------------------------------------------------------------

    def block(self, statements: list[ast.stmt]) -> None:
        for statement in statements:
            self.steps += 1
            if self.steps > MAX_STEPS:
                raise ProgramError(LIMIT, f"more than {MAX_STEPS} statements executed")
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
        elif not isinstance(node, ast.Pass):
            raise _forbidden(node, f"`{type(node).__name__}` statements")

    def assign(self, target: ast.expr, value: Any) -> None:
        self.names[_target_name(target)] = value

    def loop(self, node: ast.For) -> None:
        if node.orelse:
            raise _forbidden(node, "for ... else")
        call = node.iter
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "range"
                and not call.keywords and 1 <= len(call.args) <= 3):
            raise _forbidden(node, "loops other than `for ... in range(...)`")
        bounds = [self.value(arg) for arg in call.args]
        if not all(type(bound) is int for bound in bounds):
            raise ProgramError(RUNTIME, f"line {node.lineno}: range() takes integers")
        try:
            values = range(*bounds)
        except ValueError as error:
            raise ProgramError(RUNTIME, f"line {node.lineno}: {error}") from None
        if len(values) > MAX_RANGE:
            raise ProgramError(LIMIT, f"line {node.lineno}: range of {len(values)} > {MAX_RANGE} iterations")
        for value in values:
            self.assign(node.target, value)
            self.block(node.body)

    def agent_call(self, call: ast.Call) -> None:
        func = call.func
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "agent"):
            raise _forbidden(call, f"calling {ast.unparse(func)!r} (only agent.<method>(...) statements act)")
        if func.attr not in METHODS:
            raise _forbidden(call, f"agent.{func.attr} (known: {', '.join(METHODS)})")
        if call.keywords or len(call.args) != 1 or isinstance(call.args[0], ast.Starred):
            raise ProgramError(RUNTIME, f"line {call.lineno}: agent.{func.attr} takes exactly one argument")
        argument = self.value(call.args[0])
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
        if isinstance(node, ast.Constant):
            if type(node.value) not in (str, int, float, bool):
                raise _forbidden(node, f"{type(node.value).__name__} literals")
            return _bounded(node.value, node)
        if isinstance(node, ast.Name):
            if node.id == "agent" or node.id in _BUILTINS or node.id == "range":
                raise _forbidden(node, f"using {node.id!r} as a value")
            if node.id not in self.names:
                raise ProgramError(RUNTIME, f"line {node.lineno}: name {node.id!r} is not defined")
            return self.names[node.id]
        if isinstance(node, ast.BinOp):
            return self.binop(node.op, self.value(node.left), self.value(node.right), node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if type(operand) not in (int, float):
                raise ProgramError(RUNTIME, f"line {node.lineno}: unary minus on {type(operand).__name__}")
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.JoinedStr):
            return _bounded("".join(self.fstring_part(part) for part in node.values), node)
        if isinstance(node, ast.Call):
            return self.builtin(node)
        raise _forbidden(node, f"`{type(node).__name__}` expressions")

    def fstring_part(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if isinstance(node, ast.FormattedValue) and node.conversion == -1 and node.format_spec is None:
            return str(self.value(node.value))
        raise _forbidden(node, "f-string conversions and format specs")

    def builtin(self, node: ast.Call) -> Any:
        if not (isinstance(node.func, ast.Name) and node.func.id in _BUILTINS):
            raise _forbidden(node, f"calling {ast.unparse(node.func)!r} (allowed: str, int, len)")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise ProgramError(RUNTIME, f"line {node.lineno}: {node.func.id}() takes one argument here")
        argument = self.value(node.args[0])
        try:
            return _bounded(_BUILTINS[node.func.id](argument), node)
        except (TypeError, ValueError, OverflowError) as error:
            raise ProgramError(RUNTIME, f"line {node.lineno}: {error}") from None

    def binop(self, op: ast.operator, left: Any, right: Any, node: ast.AST) -> Any:
        operation = _BINOPS.get(type(op))
        if operation is None:
            raise _forbidden(node, f"the {type(op).__name__} operator")
        if isinstance(op, ast.Mod) and isinstance(left, str):
            raise _forbidden(node, "%-formatting")
        if isinstance(op, ast.Mult) and {type(left), type(right)} in ({str, int}, {str, bool}):
            text, times = (left, right) if isinstance(left, str) else (right, left)
            if len(text) * max(0, int(times)) > MAX_TEXT:
                raise ProgramError(LIMIT, f"line {node.lineno}: a string longer than {MAX_TEXT} characters")
        try:
            return _bounded(operation(left, right), node)
        except (TypeError, ZeroDivisionError, OverflowError) as error:
            raise ProgramError(RUNTIME, f"line {node.lineno}: {error}") from None


def _target_name(target: ast.expr) -> str:
    if not isinstance(target, ast.Name):
        raise _forbidden(target, f"assigning to `{type(target).__name__}`")
    if target.id == "agent" or target.id.startswith("__") or target.id in _BUILTINS or target.id == "range":
        raise _forbidden(target, f"assigning to {target.id!r}")
    return target.id


def _bounded(value: Any, node: ast.AST) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ProgramError(LIMIT, f"line {getattr(node, 'lineno', '?')}: a string longer than {MAX_TEXT} characters")
    if type(value) is int and abs(value) > MAX_INT:
        raise ProgramError(LIMIT, f"line {getattr(node, 'lineno', '?')}: a number beyond {MAX_INT}")
    return value


def _forbidden(node: ast.AST, what: str) -> ProgramError:
    return ProgramError(FORBIDDEN, f"line {getattr(node, 'lineno', '?')}: not allowed: {what}")
