"""The parent-to-child protocol: every environment variable a training process reads.

The launcher sets each of them explicitly, empty when a run does not use it
(:func:`child_environment`), so a value left in the user's shell (say
``FLRELIA_FAILPOINTS=agent.before_init=exit(3)``) never reaches a child: a child
sees what its job passed and nothing else of the protocol.  The rest of the
parent's environment (``PATH``, ``PYTHONPATH``, ...) is inherited as it is.

Every reader treats an empty value as "not set".  A test checks that this list
names every ``*_ENV`` constant of ``reference_impl`` and that children read no
other variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pytest_flrelia.contract.failpoints import FAILPOINTS_ENV, FAILPOINTS_SEED_ENV
from pytest_flrelia.contract.timeline import TIMELINE_ENV
from reference_impl.agent import (
    AGENT_CLASS_ENV,
    AGENT_HOOKS_ENV,
    AGENT_SETTINGS_ENV,
    JOB_NAME_ENV,
    LAUNCH_ONCE_ENV,
    LAUNCH_ROUND_ENV,
    SITE_ENV,
)
from reference_impl.pipe import PIPE_ADDRESS_ENV, PIPE_SECRET_ENV
from reference_impl.train_script import BEHAVIOUR_ENV
from reference_impl.watchdog import CLIENT_PID_ENV


@dataclass(frozen=True)
class ChildVariable:
    """One variable of the protocol and what it tells the child."""

    name: str
    meaning: str


PROTOCOL: tuple[ChildVariable, ...] = (
    ChildVariable(PIPE_ADDRESS_ENV, "host:port of the client's pipe listener"),
    ChildVariable(PIPE_SECRET_ENV, "hex secret of the pipe's HMAC handshake"),
    ChildVariable(SITE_ENV, "the site this process trains for"),
    ChildVariable(JOB_NAME_ENV, "the job's name (its workspace directory's)"),
    ChildVariable(LAUNCH_ONCE_ENV, "'1': one process serves every round; '0': one per round"),
    ChildVariable(LAUNCH_ROUND_ENV, "the round this process was launched for"),
    ChildVariable(AGENT_SETTINGS_ENV, "JSON of the agent's timeouts and chunk size"),
    ChildVariable(AGENT_CLASS_ENV, "module:Class of the agent to build (a known-bug variant)"),
    ChildVariable(
        AGENT_HOOKS_ENV,
        "module:function hooks called with the agent once built (a target's fault code)",
    ),
    ChildVariable(CLIENT_PID_ENV, "pid of the client the process group must die with"),
    ChildVariable(TIMELINE_ENV, "file the child appends its timeline events to"),
    ChildVariable(FAILPOINTS_ENV, "failpoint configuration of the run's faults"),
    ChildVariable(FAILPOINTS_SEED_ENV, "seed of the failpoints' probabilities"),
    ChildVariable(BEHAVIOUR_ENV, "misbehaviours of the training script (ignore_sigterm, ...)"),
)
"""Every variable of the protocol, with its meaning."""

NAMES: frozenset[str] = frozenset(variable.name for variable in PROTOCOL)


def child_environment(
    inherited: Mapping[str, str], *layers: Mapping[str, str]
) -> dict[str, str]:
    """``inherited`` without the protocol, every protocol variable empty, then ``layers``.

    Later layers win.  The result always holds every name of :data:`PROTOCOL`.
    """
    env = {name: value for name, value in inherited.items() if name not in NAMES}
    env.update({variable.name: "" for variable in PROTOCOL})
    for layer in layers:
        env.update(layer)
    return env


__all__ = ["NAMES", "PROTOCOL", "ChildVariable", "child_environment"]
