"""Keyframe schedules: a float, int, seed or prompt port that changes over a clip's frames.

A schedule is written as Deforum and FizzNodes users know it, `0:(1.0), 48:(0.4), 96:(1.0)`, and
a value may be an expression in `t` (the frame): `0:(0.6 + 0.1*sin(2*pi*t/24))`. Prompts are
keyframed the same way (`0:(a cat), 48:(a dog)`, or quoted `0: "a cat", 48: "a dog"`); between
two prompt keyframes the conditioning is blended (prompt travel). In a workflow file a scheduled
parameter is `{"schedule": "<text>", "interp": "linear"}`.

Expressions are evaluated by walking Python's AST with a closed set of operators and math
functions, so a workflow file stays data: nothing in it can call, import or look up anything
else. The engine evaluates a schedule per frame where a node runs over a Video's frames; a node
that does its own frame handling (AnimateDiff) is declared `schedules=True` and gets the
Schedule itself.
"""

from __future__ import annotations

import ast
import enum
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Port kinds that accept a schedule instead of a value.
SCHEDULABLE_KINDS = ("float", "int", "Seed", "str")
MAX_KEYFRAMES = 10_000
MAX_EXPRESSION = 500


class Interp(str, enum.Enum):
    """How values between two keyframes are found."""

    LINEAR = "linear"
    EASE = "ease"  # smooth start and stop (cosine ease in-out)
    STEP = "step"  # hold each keyframe's value until the next one


class ScheduleError(ValueError):
    """A schedule that does not parse or evaluate; the message names the keyframe."""


class TravelPrompt(str):
    """A prompt between two keyframes: the text of the nearer one, and the blend to encode.

    `blend` holds (prompt, weight) pairs whose weights sum to 1; a prompt encoder that knows it
    takes the weighted sum of the encodings (prompt travel), any other node reads plain text.
    """

    blend: tuple[tuple[str, float], ...]

    def __new__(cls, blend: tuple[tuple[str, float], ...]) -> TravelPrompt:
        text = max(blend, key=lambda pw: pw[1])[0] if blend else ""
        obj = super().__new__(cls, text)
        obj.blend = tuple(pw for pw in blend if pw[1] > 0) or ((text, 1.0),)
        return obj


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCS: dict[str, Callable[..., float]] = {
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "sqrt": math.sqrt, "exp": math.exp, "log": math.log, "abs": abs,
    "floor": math.floor, "ceil": math.ceil, "round": round, "min": min, "max": max,
    "clamp": lambda x, lo, hi: min(max(x, lo), hi),
}
_CONSTS = {"pi": math.pi, "e": math.e}


def _compile(text: str, where: str) -> ast.expr:
    if len(text) > MAX_EXPRESSION:
        raise ScheduleError(f"{where}: expression longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ScheduleError(f"{where}: '{text.strip()}' is not a number or an expression in t") from None
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant):
            ok = isinstance(n.value, (int, float)) and not isinstance(n.value, bool)
        elif isinstance(n, ast.Name):
            if n.id not in _FUNCS and n.id not in _CONSTS and n.id != "t":
                raise ScheduleError(f"{where}: unknown name '{n.id}' (use t, pi, e and "
                                    f"{', '.join(sorted(_FUNCS))})")
            ok = True
        elif isinstance(n, ast.Call):
            ok = isinstance(n.func, ast.Name) and n.func.id in _FUNCS and not n.keywords
        else:
            ok = isinstance(n, (ast.BinOp, ast.UnaryOp, ast.Load, ast.operator, ast.unaryop))
        if not ok:
            raise ScheduleError(f"{where}: '{text.strip()}' uses something a schedule cannot (only numbers, t, "
                                "+ - * / // % **, and math functions)")
    return tree


def _eval(node: ast.expr, t: float) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return t if node.id == "t" else _CONSTS[node.id]
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, t))
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, t), _eval(node.right, t)
        if isinstance(node.op, ast.Pow) and abs(b) > 64:
            raise OverflowError("exponent too large")
        return _BINARY[type(node.op)](a, b)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return _FUNCS[node.func.id](*(_eval(a, t) for a in node.args))


@dataclass(frozen=True)
class Keyframe:
    frame: int
    text: str  # the value as written (a number, an expression in t, or a prompt)
    expr: ast.expr | None = field(default=None, compare=False, repr=False)

    def value(self, t: float, where: str) -> float:
        assert self.expr is not None
        try:
            v = _eval(self.expr, t)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise ScheduleError(f"{where}, keyframe {self.frame}: '{self.text}' fails at frame {t:g} ({exc})") from None
        if not math.isfinite(v):
            raise ScheduleError(f"{where}, keyframe {self.frame}: '{self.text}' is not finite at frame {t:g}")
        return v


def split_keyframes(text: str, where: str = "schedule") -> list[tuple[int, str]]:
    """`0:(1.0), 48:(a (red:1.2) cat), 96: "x"` -> [(0, '1.0'), (48, 'a (red:1.2) cat'), (96, 'x')]."""
    out: list[tuple[int, str]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n:
            break
        j = i
        while j < n and text[j] not in ":":
            j += 1
        head = text[i:j].strip().strip("\"'")
        if j >= n:
            raise ScheduleError(f"{where}: '{text[i:].strip()[:40]}' needs the form frame:(value)")
        try:
            frame = int(head)
        except ValueError:
            raise ScheduleError(f"{where}: keyframe '{head[:40]}' is not a frame number") from None
        if frame < 0:
            raise ScheduleError(f"{where}: keyframe {frame} is before frame 0")
        i = j + 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] in "\"'":
            quote = text[i]
            end = text.find(quote, i + 1)
            if end < 0:
                raise ScheduleError(f"{where}, keyframe {frame}: the quoted value is not closed")
            value, i = text[i + 1:end], end + 1
        elif i < n and text[i] == "(":
            depth, k = 0, i
            while k < n:
                depth += {"(": 1, ")": -1}.get(text[k], 0)
                if depth == 0:
                    break
                k += 1
            if depth:
                raise ScheduleError(f"{where}, keyframe {frame}: '(' is not closed")
            value, i = text[i + 1:k], k + 1
        else:
            k = text.find(",", i)
            k = n if k < 0 else k
            value, i = text[i:k], k
        if any(f == frame for f, _ in out):
            raise ScheduleError(f"{where}: keyframe {frame} is given twice")
        out.append((frame, value.strip()))
        if len(out) > MAX_KEYFRAMES:
            raise ScheduleError(f"{where}: more than {MAX_KEYFRAMES} keyframes")
    if not out:
        raise ScheduleError(f"{where}: no keyframes (write them as 0:(1.0), 48:(0.5))")
    return sorted(out)


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule for one port kind; `at(frame)` gives the port's value at that frame."""

    text: str
    kind: str = "float"
    interp: Interp = Interp.LINEAR
    keyframes_: tuple[Keyframe, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, kind: str = "float", interp: str | Interp = Interp.LINEAR,
              where: str = "schedule") -> Schedule:
        if kind not in SCHEDULABLE_KINDS:
            raise ScheduleError(f"{where}: a {kind} port cannot take a schedule")
        try:
            mode = Interp(interp)
        except ValueError:
            raise ScheduleError(f"{where}: interpolation '{interp}' is not one of "
                                f"{', '.join(m.value for m in Interp)}") from None
        keys = []
        for frame, value in split_keyframes(str(text), where):
            expr = None if kind == "str" else _compile(value, f"{where}, keyframe {frame}")
            keys.append(Keyframe(frame, value, expr))
        sched = cls(str(text), kind, mode, tuple(keys))
        for k in keys:  # an expression that cannot even be evaluated at its own frame is a typo
            if k.expr is not None:
                k.value(k.frame, where)
        return sched

    @classmethod
    def from_json(cls, value: dict[str, Any], kind: str, where: str = "schedule") -> Schedule:
        return cls.parse(value.get("schedule", ""), kind, value.get("interp", Interp.LINEAR), where)

    def to_json(self) -> dict[str, Any]:
        return {"schedule": self.text, "interp": self.interp.value}

    @property
    def keyframes(self) -> list[tuple[int, Any]]:
        """(frame, value) pairs: prompts as text, numbers evaluated at their own frame."""
        return [(k.frame, k.text if k.expr is None else self._cast(k.value(k.frame, "schedule")))
                for k in self.keyframes_]

    def constants(self) -> list[tuple[int, float]]:
        """Keyframes whose value does not depend on t (a range check can judge them)."""
        return [(k.frame, _eval(k.expr, 0)) for k in self.keyframes_
                if k.expr is not None and not any(isinstance(n, ast.Name) and n.id == "t"
                                                  for n in ast.walk(k.expr))]

    def _cast(self, v: float) -> Any:
        return round(v) if self.kind in ("int", "Seed") else float(v)

    def _span(self, t: float) -> tuple[Keyframe, Keyframe, float]:
        keys = self.keyframes_
        if t <= keys[0].frame:
            return keys[0], keys[0], 0.0
        if t >= keys[-1].frame:
            return keys[-1], keys[-1], 0.0
        lo, hi = 0, len(keys) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if keys[mid].frame <= t:
                lo = mid
            else:
                hi = mid
        a, b = keys[lo], keys[hi]
        w = (t - a.frame) / (b.frame - a.frame)
        if self.interp is Interp.STEP or self.kind == "Seed":
            w = 0.0
        elif self.interp is Interp.EASE:
            w = 0.5 - 0.5 * math.cos(math.pi * w)
        return a, b, w

    def at(self, frame: float, where: str = "schedule") -> Any:
        """The value at `frame`: held before the first and after the last keyframe."""
        a, b, w = self._span(frame)
        if self.kind == "str":
            if w <= 0.0 or a is b:
                return TravelPrompt(((a.text, 1.0),))
            return TravelPrompt(((a.text, 1.0 - w), (b.text, w)))
        va = a.value(frame, where)
        v = va if w <= 0.0 else va + (b.value(frame, where) - va) * w
        return self._cast(v)


def is_schedule_json(value: Any) -> bool:
    """Whether a workflow parameter value is a schedule (`{"schedule": ...}`)."""
    return isinstance(value, dict) and "schedule" in value and set(value) <= {"schedule", "interp"}
