"""``docs/events.md``, rendered from the event contract.

:data:`~pytest_flrelia.contract.events.CONTRACT` is what a target must emit; the page is
that table plus the few rules around it, so a target author reads one page and the code
cannot drift from it (a test keeps the page equal to :func:`render_page`).
``python -m pytest_flrelia.tools.events_doc`` prints the page; ``--write docs/events.md``
writes it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_flrelia.contract.events import (
    CONTRACT,
    EventSpec,
    LaneKind,
    client_lane,
    harness_lane,
    server_lane,
    training_lane,
)
from pytest_flrelia.contract.timeline import EventKind
from pytest_flrelia.judge.invariants import CHECKS, reads_of

COMMAND = "python -m pytest_flrelia.tools.events_doc --write docs/events.md"

_LANES = (
    (LaneKind.SERVER, "server_lane()", server_lane(), "the server: rounds, downloads, aggregation"),
    (
        LaneKind.CLIENT,
        "client_lane(site)",
        client_lane("<site>"),
        "one site's client side: the launcher, the executor, its end of the pipe",
    ),
    (
        LaneKind.TRAINING,
        "training_lane(site)",
        training_lane("<site>"),
        "one site's training process (the process the launcher started)",
    ),
    (
        LaneKind.HARNESS,
        "harness_lane()",
        harness_lane(),
        "the harness: injected faults, bounds, live checks",
    ),
)

_INTRO = f"""\
# The event contract

<!-- Generated from pytest_flrelia/contract/events.py: edit CONTRACT there, then run
     {COMMAND} -->

A target (see `pytest_flrelia.contract.target`) records what happens in a run as events
on the timeline the harness hands it (`RunContext.timeline`). The invariants read only
these events, so this page is what a target must emit for a check to judge it. A kind a
target never records makes the scenarios that need it skip, with the reason.

## Recording an event

```python
context.timeline.record(EventKind.REAPED, site=site, round=round,
                        process=client_lane(site), pid=child.pid, returncode=code)
```

`Timeline.record(kind, site=, round=, process=lane, **detail)` stamps the event with
`time.monotonic()` and `os.getpid()`; the keyword arguments beyond `site`, `round` and
`process` are its `detail`. A process the target starts writes to the file named by
the `FLRELIA_TIMELINE` environment variable (`Timeline.from_environment(lane)`);
those events are merged when the job ends. Listeners of the timeline run
**synchronously**, in the thread that records: the live checks and the faults
triggered by an event act at that moment, so record an event when it happens, not at
the end of the run.

- `Event.pid` is always the OS process that recorded the event. A process an event is
  *about* is `detail["pid"]`; the table says what it is for each kind that carries it.
- `exit` and `reaped` are two events: `exit` is a training process ending by itself
  (it records it, just before); `reaped` is the launcher finding that process gone
  (killed, crashed or exited). A process that cannot say goodbye only has `reaped`.
- Required keys are the detail keys every emitter sets and some check relies on; a
  target may add others (the reports show them).

## Lanes

Every event has a lane, `Event.process`, built by the functions of
`pytest_flrelia.contract.events` and read by `lane_of`, `in_lane` and `is_training`,
never by comparing strings.

| lane | built by | looks like | who records there |
| --- | --- | --- | --- |
"""

_CHECKING = """
## Checking a run

`pytest_flrelia.contract.events.violations(events)` lists, one line each, every event
recorded in a lane its kind does not allow or lacking a required detail key; an empty
list means the run kept the contract. A target's own tests can call it on
`JobResult.timeline.events()`.
"""


def _lanes() -> str:
    return "".join(
        f"| `{kind.value}` | `{built}` | `{example}` | {who} |\n"
        for kind, built, example, who in _LANES
    )


def _row(kind: EventKind, spec: EventSpec) -> str:
    lanes = ", ".join(f"`{lane.value}`" for lane in LaneKind if lane in spec.lanes)
    keys = [f"`{key}`" for key in spec.required]
    if spec.any_of:
        keys.append("one of " + " / ".join(f"`{key}`" for key in spec.any_of))
    required = ", ".join(keys) or "none"
    meaning = spec.meaning.replace("|", "\\|")
    return f"| `{kind.value}` | {lanes} | {required} | {_readers(kind)} | {meaning} |\n"


def _readers(kind: EventKind) -> str:
    """The checks that read ``kind``, as they declare it (**bold**: needed to judge at all)."""
    names = []
    for name in ("expectation", *CHECKS):
        declared = reads_of(name)
        if kind in declared.needs:
            names.append(f"**{name}**")
        elif kind in declared.kinds:
            names.append(name)
    return ", ".join(names) or "none"


def render_page() -> str:
    """The whole of ``docs/events.md``."""
    table = (
        "\n## Event kinds\n\n"
        "*read by*: the checks that read the kind, as each declares it with `@reads`\n"
        "(`pytest_flrelia.judge.reads`); a check is handed only the kinds it declares. In\n"
        "**bold**: the check needs it, and a scenario judged by that check is skipped with\n"
        "the reason against a target that does not declare the kind in `TargetInfo.events`.\n\n"
        "| kind | lanes | required detail keys | read by | meaning |\n"
        "| --- | --- | --- | --- | --- |\n"
        + "".join(_row(kind, CONTRACT[kind]) for kind in EventKind)
    )
    return _INTRO + _lanes() + table + _CHECKING


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_flrelia.tools.events_doc",
        description="Print docs/events.md as the event contract renders it, or write it.",
    )
    parser.add_argument("--write", metavar="PATH", type=Path, help="write the page to PATH")
    args = parser.parse_args(argv)
    page = render_page()
    if args.write is None:
        sys.stdout.write(page)
    else:
        args.write.write_text(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
