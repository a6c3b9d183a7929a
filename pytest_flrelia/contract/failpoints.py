"""Named failpoints: a fail-rs style engine for injecting faults at chosen points.

The runtime calls ``failpoint("agent.after_result_sent", site=..., round=...)`` at
every interesting point.  Nothing happens unless the point is configured, and an
unconfigured call costs one truthiness test of a module-level dict (measured by
``benchmarks/failpoint_bench.py``), so the calls can stay in production code.

Configuration is a string of ``;``-separated entries ``name[scope]=actions``
(grammar in ``docs/faults.md``), set in-process with :func:`configure` or, in a
training subprocess, from :data:`FAILPOINTS_ENV` by :func:`configure_from_environment`
(never on import: the agent decides when).

The engine is process-global on purpose, like fail-rs's registry: a failpoint
placed deep in the runtime cannot be handed an engine object.
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import re
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from pytest_flrelia.contract import seams
from pytest_flrelia.contract.timeline import EventKind, Timeline

FAILPOINTS_ENV = "FLRELIA_FAILPOINTS"
FAILPOINTS_SEED_ENV = "FLRELIA_FAILPOINTS_SEED"

Recorder = Callable[[str, str, str | None, int | None, str | None], object]
"""Called on every hit that runs an action other than ``off``: name, action, site, round
and the entry's tag (``None`` when it has none).

Its return value is ignored, so ``lambda ...: timeline.record(...)`` fits;
:func:`timeline_recorder` is the one the runtime installs.
"""

VALID_ACTIONS = (
    "off, sleep(ms), hang, raise(Exc), exit(code), signal(NAME), return, call(NAME)"
)
_VALID_ACTIONS_HINT = f"valid actions: {VALID_ACTIONS}"
_SCOPE_KEYS = ("site", "round")

# A hung call wakes this often only to let the interpreter run signal handlers and
# notice a release; it keeps waiting until released.
_HANG_WAKE_INTERVAL = 1.0

_LOG = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
_TAG_RE = re.compile(r"(?P<fault>[A-Za-z_][A-Za-z0-9_]*)#(?P<id>[0-9]+)")
_KEYWORD_RE = re.compile(r"[A-Za-z_]+")
_PREFIX_RE = re.compile(
    r"(?:(?P<prob>[0-9]+(?:\.[0-9]+)?)\s*%\s*)?(?:(?P<count>[0-9]+)\s*\*\s*)?"
)
_INT_RE = re.compile(r"[0-9]+")


class FailpointSyntaxError(ValueError):
    """A configuration string that cannot be parsed.

    The message names the problem, the 0-based character position in the whole
    string and the entry, and ends with the string and a caret under the position.
    """

    def __init__(self, problem: str, *, spec: str, position: int, entry: str,
                 hint: str | None = None, source: str | None = None) -> None:
        self.problem = problem
        self.spec = spec
        self.position = position
        self.entry = entry
        self.hint = hint
        self.source = source
        where = f"{source}: " if source else ""
        tail = f"; {hint}" if hint else ""
        shown = spec.replace("\n", " ").replace("\r", " ").replace("\t", " ")
        super().__init__(
            f"{where}{problem} at position {position} in entry '{entry}'{tail}\n"
            f"  {shown}\n  {' ' * position}^"
        )


class _Kind(Enum):
    OFF = "off"
    SLEEP = "sleep"
    HANG = "hang"
    RAISE = "raise"
    EXIT = "exit"
    SIGNAL = "signal"
    RETURN = "return"
    CALL = "call"


@dataclass(frozen=True)
class _Action:
    """What a hit does. ``number`` is the ms of sleep, the code of exit, the signal of signal."""

    kind: _Kind
    text: str
    number: int = 0
    exception: type[BaseException] | None = None
    message: str | None = None


@dataclass
class _Task:
    """One link of a chain: an action, an optional probability and a remaining count."""

    action: _Action
    text: str
    probability: float | None = None   # percent, 0-100; None means always
    remaining: int | None = None       # None means forever

    def take(self, rng: random.Random) -> bool:
        """Whether this task applies to the current hit, consuming one count if it does.

        Same order as fail-rs: an exhausted task never applies, a probability miss
        does not consume a count, and in both cases the chain falls through.
        """
        if self.remaining == 0:
            return False
        if self.probability is not None and rng.random() * 100.0 >= self.probability:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True


def site_scope(site: str) -> str:
    """``site`` as a scope value: percent-encoded (``site-1`` stays as it is), so a site
    name with ``,``, ``]``, ``;``, ``=`` or spaces cannot break the grammar; the parser
    decodes it."""
    return urllib.parse.quote(site, safe="")


@dataclass(frozen=True)
class Point:
    """The left side of an entry, ``name[site=S,round=R]@FAULT#ID``: where, for whom,
    on behalf of which fault.  Also the form of any switch that is scoped and tagged
    like a failpoint (the reference training script's behaviours)."""

    name: str
    site: str | None = None
    round: int | None = None
    tag: str | None = None

    def matches(self, site: str | None, round: int | None) -> bool:
        return (self.site is None or self.site == site) and (
            self.round is None or self.round == round
        )


@dataclass
class _Entry:
    name: str
    site: str | None
    round: int | None
    tasks: list[_Task] = field(default_factory=list)
    position: int = 0   # where the entry starts in the spec it came from, for errors
    tag: str | None = None
    """``FAULT#ID``: the fault this entry injects; its hits are recorded as that fault's."""

    @property
    def key(self) -> str:
        """The left side of the entry, as :func:`configured` shows it."""
        scope = []
        if self.site is not None:
            scope.append(f"site={site_scope(self.site)}")
        if self.round is not None:
            scope.append(f"round={self.round}")
        key = f"{self.name}[{','.join(scope)}]" if scope else self.name
        return key if self.tag is None else f"{key}@{self.tag}"

    @property
    def text(self) -> str:
        return "->".join(task.text for task in self.tasks)

    def matches(self, site: str | None, round: int | None) -> bool:
        return (self.site is None or self.site == site) and (
            self.round is None or self.round == round
        )

    def covers(self, other: _Entry) -> bool:
        """Whether every call ``other`` matches is matched by this entry too."""
        return self.name == other.name and self.site in (None, other.site) and (
            self.round in (None, other.round)
        )

    def next_action(self, rng: random.Random) -> _Action | None:
        for task in self.tasks:
            if task.take(rng):
                return task.action
        return None


# Engine state.  ``_registry`` is replaced, never mutated, so the unconfigured fast
# path can read it without the lock; everything else changes under ``_lock``.
_registry: dict[str, list[_Entry]] = {}
_lock = threading.Lock()
_hits: dict[str, int] = {}
_hang_events: dict[str, threading.Event] = {}
_rng = random.Random(0)
_recorder: Recorder | None = None
_callbacks: dict[str, Callable[[], None]] = {}


def failpoint(name: str, *, site: str | None = None, round: int | None = None) -> bool:
    """Mark an interesting point; a configured failpoint acts here (sleeps, raises, exits...).

    Returns True when an action fired, so a point can also ask "should I
    misbehave here?" (the ``return`` action does nothing else).
    """
    if not _registry:
        return False
    if name in _registry:
        return _fire(name, site, round)
    return False


def register_action(name: str, callback: Callable[[], None]) -> None:
    """Make ``call(name)`` run ``callback``: process-specific faults (e.g. break the pipe)."""
    with _lock:
        _callbacks[name] = callback


def _fire(name: str, site: str | None, round: int | None) -> bool:
    """Choose the action under the lock, then record and run it outside the lock."""
    hang_event: threading.Event | None = None
    with _lock:
        entry = next((e for e in _registry.get(name, ()) if e.matches(site, round)), None)
        if entry is None:
            return False
        action = entry.next_action(_rng)
        if action is None or action.kind is _Kind.OFF:
            return False
        _hits[name] = _hits.get(name, 0) + 1
        if action.kind is _Kind.HANG:
            # Registered before anyone hears of the hit, so a release that follows
            # the recorder's call always finds it.
            hang_event = _hang_events.setdefault(name, threading.Event())
        recorder = _recorder
        tag = entry.tag
    if recorder is not None:
        try:
            recorder(name, action.text, site, round, tag)
        except Exception:
            # A broken recorder must not change what the failpoint does.
            _LOG.exception("failpoint recorder failed on %s (%s)", name, action.text)
    _run(name, action, hang_event)
    return True


def _run(name: str, action: _Action, hang_event: threading.Event | None) -> None:
    if action.kind is _Kind.SLEEP:
        time.sleep(action.number / 1000.0)
    elif action.kind is _Kind.HANG:
        assert hang_event is not None
        _LOG.info("failpoint %s hangs until released", name)
        while not hang_event.wait(_HANG_WAKE_INTERVAL):
            pass
    elif action.kind is _Kind.RAISE:
        assert action.exception is not None
        message = action.message if action.message is not None else f"failpoint {name} fired"
        raise action.exception(message)
    elif action.kind is _Kind.EXIT:
        _LOG.info("failpoint %s exits with code %d", name, action.number)
        seams.exit_process(action.number)
    elif action.kind is _Kind.SIGNAL:
        seams.kill(os.getpid(), action.number)
    elif action.kind is _Kind.CALL:
        callback = _callbacks.get(action.text[len("call("):-1])
        if callback is None:
            _LOG.warning("failpoint %s: no action registered for %s", name, action.text)
        else:
            callback()


def _restore_signals(entries: list[_Entry]) -> None:
    """Every signal a configured entry sends, no longer ignored (see below)."""
    for entry in entries:
        for task in entry.tasks:
            if task.action.kind is _Kind.SIGNAL:
                undo_inherited_ignore(task.action.number, f"failpoint {entry.key}")


def undo_inherited_ignore(number: int, by: str) -> None:
    """An ignored signal gets its default action back, in a process a fault will send it
    to.  What ignores it at start-up is, in practice, whatever started the harness
    (``nohup`` ignores SIGHUP, a shell's background job SIGINT and SIGQUIT, and every
    child inherits that), not the code under test, and a fault said to kill would act and
    change nothing (found by exploring under ``nohup``).  Call it at start-up, from the
    main thread (the only one Python lets change a disposition; a fault strikes from any
    thread); a handler the process installs (``ignore_sigterm``'s) is left alone."""
    if threading.current_thread() is not threading.main_thread():
        _LOG.warning("%s: cannot restore %s from a thread other than the main one",
                     by, signal.Signals(number).name)
        return
    if signal.getsignal(number) is signal.SIG_IGN:
        _LOG.info("%s: %s was ignored (inherited); restoring its default action",
                  by, signal.Signals(number).name)
        signal.signal(number, signal.SIG_DFL)


# ---------------------------------------------------------------- configuration


def configure(spec: str, *, seed: int = 0) -> None:
    """Replace the whole configuration; reset hit counts, reseed, release hung calls."""
    _install(_parse(spec), seed)


def _install(entries: list[_Entry], seed: int) -> None:
    global _registry, _rng
    _restore_signals(entries)
    with _lock:
        _release_locked(None)
        _hits.clear()
        _rng = random.Random(seed)
        _registry = _build_registry(entries)


def add(spec: str) -> None:
    """Add entries to the configuration.

    An entry with the same name and scope as an existing one replaces it in place;
    other entries are appended, so they match after the existing ones.
    """
    global _registry
    entries = _parse(spec)
    _restore_signals(entries)
    with _lock:
        current = [entry for group in _registry.values() for entry in group]
        for entry in entries:
            index = next((i for i, old in enumerate(current) if old.key == entry.key), None)
            if index is None:
                current.append(entry)
            else:
                current[index] = entry
        for index, entry in enumerate(current):
            if not any(entry is new for new in entries):
                continue
            shadow = next((old for old in current[:index] if old.covers(entry)), None)
            if shadow is not None:
                raise FailpointSyntaxError(
                    f"entry '{entry.key}' can never fire", spec=spec, position=entry.position,
                    entry=f"{entry.key}={entry.text}",
                    hint=f"the configured entry '{shadow.key}' matches every call first; "
                    "configure() the whole set with the narrower scope first")
        _registry = _build_registry(current)


def clear() -> None:
    """Remove every failpoint, reset hit counts and release hung calls."""
    global _registry
    with _lock:
        _registry = {}
        _hits.clear()
        _release_locked(None)


def release(name: str | None = None) -> None:
    """Wake the calls hung at ``name`` (every name when None); later hits hang again."""
    with _lock:
        _release_locked(name)


def _release_locked(name: str | None) -> None:
    names = list(_hang_events) if name is None else [name]
    for each in names:
        event = _hang_events.pop(each, None)
        if event is not None:
            event.set()


def validate(spec: str, *, source: str | None = None) -> None:
    """Raise :class:`FailpointSyntaxError` if ``spec`` is invalid; configure nothing.

    For code that builds a spec for a subprocess and wants the error here, not there.
    """
    _parse(spec, source=source)


def configured() -> dict[str, str]:
    """The configuration in match order: ``name[scope]@tag`` -> canonical actions.

    Counts show as written, not as remaining.  Joining ``f"{k}={v}"`` with ``;``
    gives back an equivalent spec.
    """
    return {entry.key: entry.text for group in _registry.values() for entry in group}


def hits(name: str) -> int:
    """How many times ``name`` ran an action other than ``off`` since the last reset."""
    with _lock:
        return _hits.get(name, 0)


def set_recorder(callback: Recorder | None) -> None:
    """Install the callback told about every hit (the runtime wires it to its timeline)."""
    global _recorder
    with _lock:
        _recorder = callback


def parse_tag(tag: str) -> tuple[str, int]:
    """The fault and id a tag ``FAULT#ID`` names: a ``fault`` event's ``fault``, ``fault_id``."""
    match = _TAG_RE.fullmatch(tag)
    if match is None:
        raise ValueError(f"bad fault tag {tag!r}: a tag is FAULT#ID, as in crash#0")
    return match.group("fault"), int(match.group("id"))


def timeline_recorder(timeline: Timeline) -> Recorder:
    """Record every hit on ``timeline``: a tagged entry's hit is the moment its fault
    acts (a ``fault`` event saying what it did), any other hit a ``failpoint`` event."""

    def record(name: str, action: str, site: str | None, round: int | None,
               tag: str | None) -> None:
        if tag is None:
            timeline.record(EventKind.FAILPOINT, site=site, round=round, name=name,
                            action=action)
        else:
            fault, fault_id = parse_tag(tag)
            timeline.record(EventKind.FAULT, site=site, round=round, fault=fault,
                            fault_id=fault_id, failpoint=name, did=action)

    return record


def configure_from_environment(environ: Mapping[str, str] | None = None) -> bool:
    """Configure from :data:`FAILPOINTS_ENV` and :data:`FAILPOINTS_SEED_ENV`.

    Returns whether a configuration was found; an unset or blank variable leaves
    the configuration as it is.
    """
    env = os.environ if environ is None else environ
    spec = env.get(FAILPOINTS_ENV, "")
    if not spec.strip():
        return False
    seed_text = env.get(FAILPOINTS_SEED_ENV, "").strip()
    try:
        seed = int(seed_text) if seed_text else 0
    except ValueError:
        raise ValueError(
            f"{FAILPOINTS_SEED_ENV}={seed_text!r} is not an integer; set it to a seed such as 42"
        ) from None
    _install(_parse(spec, source=FAILPOINTS_ENV), seed)
    return True


@contextmanager
def scoped(spec: str, seed: int = 0) -> Iterator[None]:
    """Configure ``spec`` for the body of a ``with`` block, then clear everything."""
    configure(spec, seed=seed)
    try:
        yield
    finally:
        clear()


def _build_registry(entries: list[_Entry]) -> dict[str, list[_Entry]]:
    registry: dict[str, list[_Entry]] = {}
    for entry in entries:
        registry.setdefault(entry.name, []).append(entry)
    return registry


# ---------------------------------------------------------------- parsing


class _EntryParser:
    """Parses one entry; every error carries a position in the whole spec."""

    def __init__(self, spec: str, base: int, text: str, source: str | None) -> None:
        self.spec = spec
        self.base = base          # position of ``text[0]`` in ``spec``
        self.text = text
        self.source = source

    def fail(self, problem: str, at: int, hint: str | None = None) -> FailpointSyntaxError:
        return FailpointSyntaxError(problem, spec=self.spec, position=self.base + at,
                                    entry=self.text, hint=hint, source=self.source)

    def parse(self) -> _Entry:
        text = self.text
        point, at = self.parse_point(0)
        if at >= len(text) or text[at] != "=":
            raise self.fail(f"missing '=' after '{text[:at].rstrip()}'", at,
                            "write name=action")
        entry = _Entry(name=point.name, site=point.site, round=point.round, tag=point.tag)
        for start, piece in _pieces(text, at + 1, "->"):
            entry.tasks.append(self.parse_task(start, piece))
        return entry

    def parse_point(self, at: int) -> tuple[Point, int]:
        """The left side starting at ``at``, and where what follows it starts."""
        text = self.text
        match = _NAME_RE.match(text, at)
        if match is None:
            token = re.split(r"[\s=\[,]", text[at:], maxsplit=1)[0] or text[at:at + 1]
            raise self.fail(f"bad name '{token}'", at,
                            "a name starts with a letter or '_' and holds letters, digits, "
                            "'_', '.', '-'")
        name = match.group()
        at = _skip_space(text, match.end())
        site: str | None = None
        round_: int | None = None
        if at < len(text) and text[at] == "[":
            close = text.find("]", at)
            if close == -1:
                raise self.fail("unclosed '['", at, "write name[site=site-1,round=2]=action")
            site, round_ = self.parse_scope(at + 1, close)
            at = _skip_space(text, close + 1)
        tag: str | None = None
        if at < len(text) and text[at] == "@":
            tag_at = _skip_space(text, at + 1)
            match = _TAG_RE.match(text, tag_at)
            if match is None:
                raise self.fail("bad tag", tag_at, "a tag is FAULT#ID, as in @crash#0")
            tag = match.group()
            at = _skip_space(text, match.end())
        return Point(name, site, round_, tag), at

    def parse_scope(self, start: int, end: int) -> tuple[str | None, int | None]:
        values: dict[str, str] = {}
        if not self.text[start:end].strip():
            raise self.fail("empty scope", start, "write [site=site-1], [round=2] or both")
        for item_at, item in _pieces(self.text, start, ",", end=end):
            if "=" not in item:
                raise self.fail(f"bad scope item '{item}'", item_at, "write key=value")
            key, _, value = item.partition("=")
            key = key.strip()
            value_at = item_at + item.index("=") + 1
            value_at = _skip_space(self.text, value_at)
            value = value.strip()
            if key not in _SCOPE_KEYS:
                raise self.fail(f"unknown scope key '{key}'", item_at,
                                f"valid keys: {', '.join(_SCOPE_KEYS)}")
            if key in values:
                raise self.fail(f"duplicate scope key '{key}'", item_at)
            if not value:
                raise self.fail(f"empty value for scope key '{key}'", value_at)
            if key == "round" and not _INT_RE.fullmatch(value):
                raise self.fail(f"bad round '{value}'", value_at,
                                "a round is a non-negative integer")
            values[key] = value
        round_text = values.get("round")
        site = values.get("site")
        site = None if site is None else urllib.parse.unquote(site)
        return site, None if round_text is None else int(round_text)

    def parse_task(self, at: int, piece: str) -> _Task:
        if not piece:
            raise self.fail("missing action", at, _VALID_ACTIONS_HINT)
        prefix = _PREFIX_RE.match(piece)
        assert prefix is not None  # every part of the pattern is optional
        probability: float | None = None
        remaining: int | None = None
        prefix_text = ""
        prob_text = prefix.group("prob")
        if prob_text is not None:
            probability = float(prob_text)
            if not 0.0 <= probability <= 100.0:
                raise self.fail(f"probability '{prob_text}%' out of range", at,
                                "a probability is a percentage from 0 to 100")
            prefix_text += f"{Decimal(prob_text).normalize():f}%"
        count_text = prefix.group("count")
        if count_text is not None:
            remaining = int(count_text)
            if remaining < 1:
                raise self.fail(f"count '{count_text}*' must be at least 1",
                                at + prefix.start("count"), "write N*action with N >= 1")
            prefix_text += f"{remaining}*"
        action = self.parse_action(at + prefix.end(), piece[prefix.end():])
        return _Task(action=action, text=prefix_text + action.text,
                     probability=probability, remaining=remaining)

    def parse_action(self, at: int, text: str) -> _Action:
        if not text:
            raise self.fail("missing action", at, _VALID_ACTIONS_HINT)
        keyword = _KEYWORD_RE.match(text)
        try:
            kind = _Kind(keyword.group()) if keyword else None
        except ValueError:
            kind = None
        if kind is None or keyword is None:
            hint = _VALID_ACTIONS_HINT
            if text[:1].isdigit() or text[:1] in "-+.":
                hint = "prefixes are P% then N*, as in 50%2*raise(OSError); " + hint
            raise self.fail(f"bad action '{text}'", at, hint)
        rest_at = _skip_space(text, keyword.end())
        argument: str | None = None
        argument_at = at + rest_at
        if rest_at < len(text):
            if text[rest_at] != "(":
                raise self.fail(f"bad action '{text}'", at, _VALID_ACTIONS_HINT)
            close = text.rfind(")")
            if close == -1:
                raise self.fail(f"missing ')' in '{text}'", at + len(text))
            trailing = text[close + 1:].strip()
            if trailing:
                raise self.fail(f"unexpected '{trailing}' after '{text[:close + 1]}'",
                                at + _skip_space(text, close + 1))
            inner = text[rest_at + 1:close]
            argument_at = at + _skip_space(text, rest_at + 1)
            argument = inner.strip()
        return self.parse_argument(kind, at, argument, argument_at)

    def parse_argument(self, kind: _Kind, at: int, argument: str | None,
                       argument_at: int) -> _Action:
        if kind in (_Kind.OFF, _Kind.HANG, _Kind.RETURN):
            if argument is not None:
                raise self.fail(f"'{kind.value}' takes no argument", argument_at,
                                f"write {kind.value}")
            return _Action(kind, kind.value)
        usage = {_Kind.SLEEP: "sleep(ms)", _Kind.RAISE: "raise(Exc) or raise(Exc, message)",
                 _Kind.EXIT: "exit(code)", _Kind.SIGNAL: "signal(NAME)",
                 _Kind.CALL: "call(NAME)"}[kind]
        if not argument:
            raise self.fail(f"'{kind.value}' needs an argument", argument_at, f"write {usage}")
        if kind is _Kind.SLEEP:
            if not _INT_RE.fullmatch(argument):
                raise self.fail(f"bad argument '{argument}' for sleep(ms)", argument_at,
                                "ms is a non-negative integer number of milliseconds")
            return _Action(kind, f"sleep({int(argument)})", number=int(argument))
        if kind is _Kind.EXIT:
            if not _INT_RE.fullmatch(argument) or int(argument) > 255:
                raise self.fail(f"bad exit code '{argument}'", argument_at,
                                "an exit code is an integer from 0 to 255")
            return _Action(kind, f"exit({int(argument)})", number=int(argument))
        if kind is _Kind.CALL:
            if not argument.isidentifier():
                raise self.fail(f"bad action name '{argument}' for call(NAME)", argument_at,
                                "NAME is an identifier registered with register_action()")
            return _Action(kind, f"call({argument})")
        if kind is _Kind.SIGNAL:
            number = _signal_number(argument)
            if number is None:
                raise self.fail(f"unknown signal '{argument}'", argument_at,
                                "write a name such as SIGTERM, SIGKILL, SIGINT, SIGUSR1")
            return _Action(kind, f"signal({signal.Signals(number).name})", number=number)
        return self.parse_raise(argument, argument_at)

    def parse_raise(self, argument: str, argument_at: int) -> _Action:
        exc_name, comma, message_text = argument.partition(",")
        exc_name = exc_name.strip()
        exception = getattr(builtins, exc_name, None) if exc_name.isidentifier() else None
        hint = "write a builtin exception class such as RuntimeError, OSError, ConnectionError"
        if not (isinstance(exception, type) and issubclass(exception, BaseException)):
            raise self.fail(f"unknown exception '{exc_name}'", argument_at, hint)
        message = _unquote(message_text.strip()) if comma else None
        try:
            exception("failpoint" if message is None else message)
        except TypeError:
            raise self.fail(f"exception '{exc_name}' cannot be raised with a message",
                            argument_at, hint) from None
        text = f"raise({exc_name})" if message is None else f"raise({exc_name}, {message})"
        return _Action(_Kind.RAISE, text, exception=exception, message=message)


def parse_points(text: str, *, separator: str = ",", source: str | None = None) -> list[Point]:
    """``separator``-separated left sides (``name[scope]@FAULT#ID``, scope and tag optional).

    The one parser of that form besides the entries' own: a malformed item raises
    :class:`FailpointSyntaxError` (with its position), it is never dropped.  An empty
    ``text`` is no item.
    """
    parser = _EntryParser(text, 0, text, source)
    points: list[Point] = []
    at = _skip_space(text, 0)
    while at < len(text):
        point, at = parser.parse_point(at)
        points.append(point)
        if at < len(text):
            if text[at] != separator:
                raise parser.fail(f"expected '{separator}' or the end", at,
                                  f"write name[site=S,round=R]@FAULT#ID{separator}...")
            at = _skip_space(text, at + 1)
            if at >= len(text):
                raise parser.fail(f"nothing after '{separator}'", at)
    return points


def _parse(spec: str, *, source: str | None = None) -> list[_Entry]:
    entries: list[_Entry] = []
    for start, text in _pieces(spec, 0, ";"):
        if not text:
            continue  # empty entries (a trailing ';') are allowed
        parser = _EntryParser(spec, start, text, source)
        entry = parser.parse()
        entry.position = start
        for earlier in entries:
            if earlier.key == entry.key:
                raise parser.fail(f"duplicate entry for '{entry.key}'", 0,
                                  f"an entry with the same name and scope is at position "
                                  f"{earlier.position}; merge them into one chain")
            if earlier.covers(entry):
                raise parser.fail(f"entry '{entry.key}' can never fire", 0,
                                  f"'{earlier.key}' at position {earlier.position} matches "
                                  "every call first; put the narrower scope first")
        entries.append(entry)
    return entries


def _pieces(text: str, start: int, separator: str,
            end: int | None = None) -> Iterator[tuple[int, str]]:
    """Split ``text[start:end]`` at ``separator``: (position of the stripped piece, piece)."""
    stop = len(text) if end is None else end
    at = start
    while True:
        found = text.find(separator, at, stop)
        piece_end = stop if found == -1 else found
        raw = text[at:piece_end]
        lead = len(raw) - len(raw.lstrip())
        yield at + lead, raw.strip()
        if found == -1:
            return
        at = found + len(separator)


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def _signal_number(name: str) -> int | None:
    upper = name.upper()
    candidate = upper if upper.startswith("SIG") else f"SIG{upper}"
    member = signal.Signals.__members__.get(candidate)
    return None if member is None else int(member)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


__all__ = [
    "FAILPOINTS_ENV",
    "FAILPOINTS_SEED_ENV",
    "VALID_ACTIONS",
    "FailpointSyntaxError",
    "Point",
    "Recorder",
    "add",
    "clear",
    "configure",
    "configure_from_environment",
    "configured",
    "failpoint",
    "hits",
    "parse_points",
    "parse_tag",
    "register_action",
    "release",
    "scoped",
    "set_recorder",
    "site_scope",
    "timeline_recorder",
    "undo_inherited_ignore",
    "validate",
]
