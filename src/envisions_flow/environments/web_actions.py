"""What a web program may do and what it becomes: the agent methods and keys, the error classes of a
refused program, the interpreter's budget (web_programs.py) and the Action the browser replays (web_page.py)."""

from __future__ import annotations

from dataclasses import dataclass

# Error classes (base.NO_PROGRAM is "no_program"; the browser adds its own in environments/web.py).
SYNTAX = "syntax"
FORBIDDEN = "forbidden"
LIMIT = "limit"            # more actions, loop iterations or list items than allowed, or a huge number
RUNTIME = "runtime"
BAD_KEY = "bad_key"
NO_PROGRAM = "no_program"
TOO_LARGE = "too_large"    # source characters, AST nodes or nesting depth
TEXT_LIMIT = "text_limit"  # a string longer than MAX_TEXT, or more than MAX_TEXT_TOTAL characters built
CPU_LIMIT = "cpu_limit"    # statements executed, expressions evaluated, or CPU seconds

METHODS = ("click_xpath", "type", "press", "click_option", "movemouse")
# Synapse's parameter names, accepted as keywords
PARAMETERS = {"click_xpath": "xpath", "type": "characters", "press": "key_type", "click_option": "xpath",
              "movemouse": "xpath"}

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
MAX_AST_NODES = 5_000
MAX_DEPTH = 100           # nested expressions and blocks (a real program nests a handful)
MAX_TEXT = 1_000          # longest string a program may build (a typed text, an xpath)
MAX_TEXT_TOTAL = 200_000  # characters of all the strings it builds together
MAX_ITEMS = 100           # longest list or tuple
MAX_RANGE = 100           # largest range() a loop may run
MAX_STEPS = 5_000         # statements executed in all (loops included)
MAX_EVALUATIONS = 50_000  # expression nodes evaluated in all (~70 ms of CPU)
CPU_S = 1.0               # CPU seconds of the interpreting thread, whatever the counts say
MAX_INT = 10**12


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
