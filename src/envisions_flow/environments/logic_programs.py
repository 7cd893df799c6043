"""Logic-LM programs (Predicates / Facts / Rules / Query) answered by the clingo solver.

ENVISIONS ran these programs on Pyke, which no registry here provides. Forward
chaining over definite rules computes the least model of the program, which is
exactly what an answer-set solver grounds and solves, so each program is
compiled to ASP and handed to clingo instead of a hand-written engine:

- `Furry(Anne, True)` becomes `p_Furry("Anne",t).`; variables `$x` become `V_x`. Names keep their
  case: `Big` and `BIG` are two predicates, as they were to Pyke.
- `A && B >>> C && D` becomes one ASP rule per conclusion.
- Open world (ProofWriter): the query is True when the atom with its value is
  derivable, False when the atom with the opposite value is, else Unknown.
- Closed world (RuleTaker CWA): an atom is false unless derivable with value
  True; a premise with value False is read as negation as failure.

What Logic-LM's executor (the paper's judge) accepted is accepted here too: no Predicates
section (it only declares), rules written under `Facts:` when the program has no (or an empty)
`Rules:` section, and negation written `!P(a, True)` or `¬P(a, True)`, read as `P(a, False)`.

A program that states nothing (no facts, no rules), or whose query is about a constant that no
fact or rule mentions, answers Unknown (closed world: the query's opposite) whatever the theory
says; such programs are refused (`empty_program`, `unrelated_query`) instead of being credited on
every item whose label happens to be Unknown. A query about a predicate only declared is kept:
"Bob is blue" is Unknown when nothing mentions blue, and correct programs say so. In the open
world, a program that derives an atom both True and False (`inconsistent_program`) is refused
too: ProofWriter's theories are consistent, and stating both values of the query made it True.

Errors are classified, never raised to the caller of `answer_or_error()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"

# Error classes of a logic program ("" = it ran).
MISSING_SECTION = "missing_section"
UNBALANCED = "unbalanced_parentheses"
BAD_ATOM = "bad_atom"
BAD_RULE = "bad_rule"
ARITY_CLASH = "arity_clash"
UNKNOWN_PREDICATE = "unknown_predicate"
EMPTY_PROGRAM = "empty_program"
UNRELATED_QUERY = "unrelated_query"
INCONSISTENT = "inconsistent_program"
SOLVER = "solver_error"

SECTIONS = ("Predicates", "Facts", "Rules", "Query")
REQUIRED = ("Facts", "Query")  # Logic-LM's executor needed no Predicates, and found rules under Facts
_HEADER = re.compile(r"^\s*(Predicates|Facts|Rules|Query)\s*:\s*$")
_ATOM = re.compile(r"^\s*([A-Za-z_][\w]*)\s*\((.*)\)\s*$", re.DOTALL)
_VARIABLE = re.compile(r"^\$[A-Za-z_]\w*$")
_VALUES = {"true": True, "false": False}
_NEGATION = ("!", "¬")


class ProgramError(ValueError):
    """A malformed program; `error_class` says what kind."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


@dataclass(frozen=True)
class Atom:
    """predicate(args..., value): the last argument of every atom is its truth value."""

    predicate: str
    args: tuple[str, ...]
    value: bool


@dataclass(frozen=True)
class Rule:
    premises: tuple[Atom, ...]
    conclusions: tuple[Atom, ...]


@dataclass
class Program:
    arities: dict[str, int] = field(default_factory=dict)
    facts: list[Atom] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    query: Atom | None = None


def _strip_comment(line: str) -> str:
    return line.split(":::", 1)[0].strip()


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current = None
    for raw in text.splitlines():
        line = _strip_comment(raw)
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
        elif line and current is not None:
            sections[current].append(line)
    missing = [name for name in REQUIRED if name not in sections]
    if missing:
        raise ProgramError(MISSING_SECTION, f"missing section(s): {', '.join(missing)}")
    if not sections.get("Rules"):  # as Logic-LM's executor did: the rules were written among the facts
        sections["Rules"] = [line for line in sections["Facts"] if ">>>" in line]
        sections["Facts"] = [line for line in sections["Facts"] if ">>>" not in line]
    return sections


def _check_parentheses(line: str) -> None:
    depth = 0
    for char in line:
        depth += char == "("
        depth -= char == ")"
        if depth < 0:
            break
    if depth != 0:
        raise ProgramError(UNBALANCED, f"unbalanced parentheses in {line!r}")


def _parse_atom(text: str, program: Program, declaration: bool = False) -> Atom:
    _check_parentheses(text)
    stripped, negated = text.strip(), False
    while stripped.startswith(_NEGATION):  # !P(a, True) is P(a, False)
        stripped, negated = stripped[1:].lstrip(), not negated
    match = _ATOM.match(stripped)
    if not match:
        raise ProgramError(BAD_ATOM, f"not an atom: {text!r}")
    name, inner = match.group(1), match.group(2)
    if "(" in inner or ")" in inner:
        raise ProgramError(BAD_ATOM, f"nested terms are not allowed: {text!r}")
    args = tuple(arg.strip() for arg in inner.split(","))
    if any(not arg for arg in args):
        raise ProgramError(BAD_ATOM, f"empty argument in {text!r}")
    known = program.arities.get(name)
    if known is not None and known != len(args):
        raise ProgramError(ARITY_CLASH, f"{name} has {len(args)} arguments in {text!r}, {known} elsewhere")
    program.arities[name] = len(args)
    if declaration:
        return Atom(name, args[:-1], True)
    value = _VALUES.get(args[-1].lower())
    if value is None:
        raise ProgramError(BAD_ATOM, f"the last argument of {text!r} must be True or False")
    for arg in args[:-1]:
        if not _VARIABLE.match(arg) and (arg.startswith("$") or not re.fullmatch(r"[\w\-' .]+", arg)):
            raise ProgramError(BAD_ATOM, f"bad argument {arg!r} in {text!r}")
    return Atom(name, args[:-1], value != negated)


def _split_conjunction(text: str, program: Program) -> tuple[Atom, ...]:
    parts = [part for part in text.split("&&")]
    if any(not part.strip() for part in parts):
        raise ProgramError(BAD_RULE, f"empty conjunct in {text!r}")
    return tuple(_parse_atom(part, program) for part in parts)


def parse(text: str) -> Program:
    """Parse a Logic-LM program; raises ProgramError with an error class."""
    sections = _sections(text)
    program = Program()
    for line in sections.get("Predicates", []):
        _parse_atom(line, program, declaration=True)
    for line in sections["Facts"]:
        if ">>>" in line:
            raise ProgramError(BAD_RULE, f"a rule under Facts, while the Rules section holds others: {line!r}")
        atom = _parse_atom(line, program)
        if any(_VARIABLE.match(arg) for arg in atom.args):
            raise ProgramError(BAD_ATOM, f"a fact cannot hold variables: {line!r}")
        program.facts.append(atom)
    for line in sections["Rules"]:
        if ">>>" not in line:
            raise ProgramError(BAD_RULE, f"a fact or text under Rules (a rule has a '>>>'): {line!r}")
        if line.count(">>>") != 1:
            raise ProgramError(BAD_RULE, f"a rule needs exactly one '>>>': {line!r}")
        left, right = line.split(">>>")
        rule = Rule(_split_conjunction(left, program), _split_conjunction(right, program))
        bound = {arg for atom in rule.premises for arg in atom.args if _VARIABLE.match(arg)}
        free = {arg for atom in rule.conclusions for arg in atom.args if _VARIABLE.match(arg)} - bound
        if free:
            raise ProgramError(BAD_RULE, f"conclusion variables {sorted(free)} do not occur in the premises: {line!r}")
        program.rules.append(rule)
    if not program.facts and not program.rules:
        raise ProgramError(EMPTY_PROGRAM, "the program states no facts and no rules: its answer would not depend "
                                          "on the theory")
    if not sections["Query"]:
        raise ProgramError(MISSING_SECTION, "the Query section is empty")
    known = dict(program.arities)
    query = _parse_atom(sections["Query"][0], Program(arities=dict(program.arities)))
    if query.predicate not in known:
        raise ProgramError(UNKNOWN_PREDICATE, f"the query uses {query.predicate!r}, which the program never mentions")
    if any(_VARIABLE.match(arg) for arg in query.args):
        raise ProgramError(BAD_ATOM, "the query cannot hold variables")
    stated = {arg for atom in _atoms(program) for arg in atom.args}
    unrelated = [arg for arg in query.args if arg not in stated]
    if unrelated:
        raise ProgramError(UNRELATED_QUERY, f"the query is about {unrelated}, which no fact or rule mentions")
    program.query = query
    return program


def _atoms(program: Program) -> list[Atom]:
    """Every fact, premise and conclusion."""
    return program.facts + [atom for rule in program.rules for atom in rule.premises + rule.conclusions]


def _term(arg: str) -> str:
    if _VARIABLE.match(arg):
        return "V_" + arg[1:]
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _asp_atom(atom: Atom, value: bool | None = None) -> str:
    value = atom.value if value is None else value
    args = [_term(arg) for arg in atom.args] + ["t" if value else "f"]
    return f"p_{atom.predicate}({','.join(args)})"


def compile_asp(program: Program, closed_world: bool) -> str:
    """The program as ASP rules (see the module docstring for the mapping)."""
    lines = [_asp_atom(fact) + "." for fact in program.facts if fact.value or not closed_world]
    constants = {arg for fact in program.facts for arg in fact.args}
    constants |= {arg for rule in program.rules for atom in rule.premises + rule.conclusions for arg in atom.args
                  if not _VARIABLE.match(arg)}
    lines += [f"dom({_term(constant)})." for constant in sorted(constants)]
    for rule in program.rules:
        body = []
        for premise in rule.premises:
            if closed_world and not premise.value:
                body.append("not " + _asp_atom(premise, True))
            else:
                body.append(_asp_atom(premise))
        variables = sorted({arg for atom in rule.premises + rule.conclusions for arg in atom.args
                            if _VARIABLE.match(arg)})
        body += [f"dom({_term(variable)})" for variable in variables]
        for conclusion in rule.conclusions:
            if closed_world and not conclusion.value:
                continue  # under the closed world, False is the default: nothing to derive
            lines.append(f"{_asp_atom(conclusion)} :- {', '.join(body)}." if body else f"{_asp_atom(conclusion)}.")
    return "\n".join(lines)


def _least_model(asp: str) -> set[str]:
    import clingo

    control = clingo.Control(["--warn=none", "--models=1"])
    control.add("base", [], asp)
    control.ground([("base", [])])
    atoms: set[str] = set()
    with control.solve(yield_=True) as handle:
        for model in handle:
            atoms = {str(symbol) for symbol in model.symbols(atoms=True)}
            break
        else:
            raise ProgramError(SOLVER, "the program has no answer set (contradictory negation)")
    return atoms


def answer(text: str, closed_world: bool = False) -> str:
    """True / False / Unknown for a program's query; raises ProgramError for a malformed program."""
    program = parse(text)
    assert program.query is not None
    try:
        model = _least_model(compile_asp(program, closed_world))
    except RuntimeError as error:  # clingo's parse/ground errors
        raise ProgramError(SOLVER, f"clingo: {error}") from None
    query = program.query
    if not closed_world:
        contradicted = sorted({atom[:-3] for atom in model if atom.endswith(",t)")}
                              & {atom[:-3] for atom in model if atom.endswith(",f)")})
        if contradicted:
            raise ProgramError(INCONSISTENT, f"the program derives both True and False for {contradicted[:3]}")
    holds = _asp_atom(query, True) in model
    if closed_world:
        return TRUE if holds == query.value else FALSE
    if _asp_atom(query) in model:
        return TRUE
    if _asp_atom(query, not query.value) in model:
        return FALSE
    return UNKNOWN


def answer_or_error(text: str, closed_world: bool) -> str:
    """`answer()` as a string for the sandbox to hand back: the label, or 'error:<class>:<message>'."""
    try:
        return answer(text, closed_world)
    except ProgramError as error:
        return f"error:{error.error_class}:{error}"
