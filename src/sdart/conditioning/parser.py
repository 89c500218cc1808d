"""The A1111 prompt language as text: prompt editing and alternation (a schedule of prompts over the steps), and
emphasis weights with BREAK (fragments of text, each with its weight).

Behaviour as in A1111 1.10 `modules/prompt_parser.py` (`get_learned_conditioning_prompt_schedules`,
`parse_prompt_attention`), written here as a small recursive-descent parser instead of a grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

# --------------------------------------------------------------------------------------------------
# Prompt editing and alternation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Edit:
    """`[before:after:when]`; `before` is None for `[after:when]`."""

    before: tuple[_Node, ...] | None
    after: tuple[_Node, ...]
    when: str  # the number as typed: a "." makes it a fraction of the steps


@dataclass(frozen=True)
class _Alternation:
    """`[a|b|c]`: option (step - 1) % n at step n (steps counted from 1)."""

    options: tuple[tuple[_Node, ...], ...]


_Node = Union[str, _Edit, _Alternation]

# lark's SIGNED_NUMBER (the number A1111's grammar takes for `when`), then optional spaces and the closing "]".
_WHEN = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))\s*\]")
_STOPS = "()[]:|\\"


class _ScheduleParser:
    """Brackets that form `[..:..:n]`, `[..|..]`, `(..)`, `(..:..)` or `[..]` are structure; at the top level any
    other bracket or colon is literal text, while inside a bracket pair such a stray one makes that pair literal.

    Where A1111's grammar (lark, Earley) allows two readings, this parser takes the bracket construct; lark does
    too, except for some top-level edits followed at once by two or more stray brackets ("[a:b:3]))"), which it
    reads as literal text.
    """

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def parse(self) -> list[_Node] | None:
        """The prompt's nodes, or None where A1111's grammar rejects the prompt (a `|` outside `[..|..]`, a lone
        trailing backslash): A1111 then uses the prompt as typed, with no schedule."""
        nodes: list[_Node] = []
        while True:
            nodes += self._sequence()
            if self.pos == len(self.text):
                return nodes
            char = self.text[self.pos]
            if char not in "()[]:":
                return None
            nodes.append(char)
            self.pos += 1

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _sequence(self) -> list[_Node]:
        """Plain text, escapes and bracket constructs, up to the first character none of them can start."""
        nodes: list[_Node] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "\\":
                if self.pos + 1 == len(self.text) or self.text[self.pos + 1] == "\n":
                    break
                nodes.append(self.text[self.pos:self.pos + 2])  # an escape stays as typed (the weight parser reads it)
                self.pos += 2
            elif char in "([":
                start = self.pos
                construct = self._construct()
                if construct is None:
                    self.pos = start
                    break
                nodes += construct
            elif char in _STOPS:
                break
            else:
                end = self.pos
                while end < len(self.text) and self.text[end] not in _STOPS:
                    end += 1
                nodes.append(self.text[self.pos:end])
                self.pos = end
        return nodes

    def _expect(self, char: str) -> bool:
        if self._peek() == char:
            self.pos += 1
            return True
        return False

    def _when(self) -> str | None:
        """`n]` (spaces allowed around n): the number, with the position moved past the bracket."""
        found = _WHEN.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group(1)

    def _construct(self) -> list[_Node] | None:
        opening = self.text[self.pos]
        self.pos += 1
        first = self._sequence()
        if opening == "(":  # emphasis stays text here; parse_weights reads it later
            if self._expect(")"):
                return ["(", *first, ")"]
            if self._expect(":"):
                weight = self._sequence()
                if self._expect(")"):
                    return ["(", *first, ":", *weight, ")"]
            return None
        if self._expect("]"):
            return ["[", *first, "]"]
        if self._peek() == "|":
            options = [tuple(first)]
            while self._expect("|"):
                options.append(tuple(self._sequence()))
            return [_Alternation(tuple(options))] if self._expect("]") else None
        if not self._expect(":"):
            return None
        when = self._when()
        if when is not None:
            return [_Edit(None, tuple(first), when)]
        second = self._sequence()
        if self._expect(":"):
            when = self._when()
            if when is not None:
                return [_Edit(tuple(first), tuple(second), when)]
        return None


def _edit_step(when: str, steps: int) -> int:
    """The last step of `before`: a number with a "." is a fraction of the steps, int()'d; others a step number
    (A1111 1.10's default, not its "use old scheduling" option where only numbers below 1 are fractions)."""
    value = float(when)
    if "." in when:
        value *= steps
    return min(steps, int(value))


def _switch_steps(nodes: tuple[_Node, ...] | list[_Node], steps: int, found: set[int]) -> None:
    """Every step at which some part of the prompt may change, including parts inside options not taken."""
    for node in nodes:
        if isinstance(node, _Edit):
            step = _edit_step(node.when, steps)
            if step >= 1:
                found.add(step)
            _switch_steps(node.before or (), steps, found)
            _switch_steps(node.after, steps, found)
        elif isinstance(node, _Alternation):
            found.update(range(1, steps + 1))
            for option in node.options:
                _switch_steps(option, steps, found)


def _render(nodes: tuple[_Node, ...] | list[_Node], step: int, steps: int) -> str:
    parts = []
    for node in nodes:
        if isinstance(node, str):
            parts.append(node)
        elif isinstance(node, _Edit):
            parts.append(_render(node.before or () if step <= _edit_step(node.when, steps) else node.after, step, steps))
        else:  # every alternation counts the same global step, so nested ones stay in lock-step (A1111)
            parts.append(_render(node.options[(step - 1) % len(node.options)], step, steps))
    return "".join(parts)


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """[(last step, prompt text)] in step order, steps counted from 1; the last entry ends at `steps`.

    >>> prompt_schedule("a [b:c:2] d", 4)
    [(2, 'a b d'), (4, 'a c d')]
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    nodes = _ScheduleParser(prompt).parse()
    if nodes is None:
        return [(steps, prompt)]
    switches = {steps}
    _switch_steps(nodes, steps, switches)
    return [(step, _render(nodes, step, steps)) for step in sorted(switches)]


# --------------------------------------------------------------------------------------------------
# Emphasis weights and BREAK
# --------------------------------------------------------------------------------------------------

ROUND_MULTIPLIER = 1.1  # (text)
SQUARE_MULTIPLIER = 1 / 1.1  # [text]
_EXPLICIT_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")  # the ":1.3)" that closes "(text:1.3)"
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclass
class Fragment:
    """A run of prompt text with one weight; `is_break` marks a BREAK (which closes the current chunk)."""

    text: str
    weight: float = 1.0
    is_break: bool = False


def _literal_run(text: str, start: int) -> int:
    """The end of a run of text with no brackets, colons or backslashes."""
    end = start
    while end < len(text) and text[end] not in "()[]:\\":
        end += 1
    return end


def parse_weights(text: str) -> list[Fragment]:
    """A1111's emphasis: `(x)` ×1.1, `[x]` ÷1.1, `(x:w)` ×w, nesting multiplies, `\\(` `\\)` `\\[` `\\]` `\\\\` are
    literal, a bracket never closed applies to the rest of the prompt, a closing one never opened is text; the
    upper-case word BREAK splits fragments. Runs with equal weights are merged.

    Unlike A1111 (where a BREAK inside brackets turns into the literal word with a negative weight), BREAK is a
    break wherever it stands.
    """
    fragments: list[Fragment] = []
    round_open: list[int] = []  # index into fragments where each open bracket started
    square_open: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for fragment in fragments[start:]:
            if not fragment.is_break:
                fragment.weight *= factor

    pos = 0
    while pos < len(text):
        char = text[pos]
        explicit = _EXPLICIT_WEIGHT.match(text, pos) if char == ":" else None
        if char == "\\":
            escaped = text[pos + 1:pos + 2]
            if escaped and escaped in "()[]\\":  # "\(" → "(" and so on
                fragments.append(Fragment(escaped))
                pos += 2
            else:  # a backslash before anything else (or at the end) is dropped, as in A1111
                fragments.append(Fragment(""))
                pos += 1
        elif char == "(":
            round_open.append(len(fragments))
            pos += 1
        elif char == "[":
            square_open.append(len(fragments))
            pos += 1
        elif explicit is not None and round_open and _is_number(explicit.group(1)):
            scale_from(round_open.pop(), float(explicit.group(1)))
            pos = explicit.end()
        elif char == ")" and round_open:
            scale_from(round_open.pop(), ROUND_MULTIPLIER)
            pos += 1
        elif char == "]" and square_open:
            scale_from(square_open.pop(), SQUARE_MULTIPLIER)
            pos += 1
        else:
            end = explicit.end() if explicit is not None else max(_literal_run(text, pos), pos + 1)
            for i, part in enumerate(_BREAK.split(text[pos:end])):
                if i:
                    fragments.append(Fragment("BREAK", 1.0, is_break=True))
                fragments.append(Fragment(part))
            pos = end
    for start in round_open:
        scale_from(start, ROUND_MULTIPLIER)
    for start in square_open:
        scale_from(start, SQUARE_MULTIPLIER)
    return _merge(fragments) or [Fragment("")]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False  # "1.2.3": A1111 fails on it; here the text stays literal
    return True


def _merge(fragments: list[Fragment]) -> list[Fragment]:
    merged: list[Fragment] = []
    for fragment in fragments:
        if merged and not fragment.is_break and not merged[-1].is_break and merged[-1].weight == fragment.weight:
            merged[-1].text += fragment.text
        else:
            merged.append(fragment)
    return merged
