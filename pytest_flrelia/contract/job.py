"""Job settings and the production timeouts they default to.

Every timeout is a parameter with its production value as the default; tests
and scenarios scale them down instead of patching constants.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, fields
from typing import Any

DOWNLOAD_COMPLETE_TIMEOUT = 1800.0
"""How long the agent's gate waits for the server to download every tensor."""
SUBMIT_UPDATE_TIMEOUT = 300.0
"""How long the server waits for a site's SubmitUpdate in one round."""
HEARTBEAT_INTERVAL = 5.0
HEARTBEAT_TIMEOUT = 60.0
EXTERNAL_PRE_INIT_TIMEOUT = 60.0
"""How long ``execute()`` waits for a fresh subprocess to call ``init()``."""
EXTERNAL_EXECUTION_WAIT = 600.0
"""How long ``execute()`` waits for the result of one task."""
STOP_GRACE = 5.0
"""Between SIGTERM to the process group and SIGKILL."""
STOP_POLL_INTERVAL = 1.0
"""How often the deferred-stop thread checks the run status and the abort; it waits on
the process in between, so it sees the exit at once."""
DOWNLOAD_RETRIES = 3
DOWNLOAD_RETRY_DELAY = 1.0
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
DOWNLOAD_CONNECT_TIMEOUT = 5.0
MAX_NAME_BYTES = 255
"""The longest site or job name, in UTF-8 bytes: a name is one path component of a
launcher's workspace (``<workspace>/<job>/<site>``), and ``NAME_MAX`` is 255 bytes on
Linux and macOS file systems."""
REFUSED_CATEGORIES: dict[str, str] = {
    "Cc": "a control character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
"""Unicode categories no name may hold: the OS refuses NUL in an environment variable
or argv, a line break splits the name's log line, a surrogate has no UTF-8 encoding."""
PATH_SEPARATORS = "/\\"
"""A name is one directory of the workspace: a separator would make it several."""


@dataclass(frozen=True)
class Timeouts:
    """Every wait of the runtime, in seconds.  Defaults are production values."""

    download_complete: float = DOWNLOAD_COMPLETE_TIMEOUT
    submit_update: float = SUBMIT_UPDATE_TIMEOUT
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    heartbeat: float = HEARTBEAT_TIMEOUT
    pre_init: float = EXTERNAL_PRE_INIT_TIMEOUT
    execution: float = EXTERNAL_EXECUTION_WAIT
    stop_grace: float = STOP_GRACE
    stop_poll: float = STOP_POLL_INTERVAL
    download_retry_delay: float = DOWNLOAD_RETRY_DELAY
    download_connect: float = DOWNLOAD_CONNECT_TIMEOUT
    stop_wait: float | None = None
    """How long the deferred stop waits for a natural exit, and the next round for it.

    None (not set): the executor waits as long as the gate (``download_complete``), as
    NVFlare's client-API executor derives ``stop_task_wait_timeout`` from
    ``download_complete_timeout``; see ``LauncherExecutor.stop_wait``.
    """

    @property
    def deferred_stop_wait(self) -> float:
        """``stop_wait`` when set, else ``download_complete``: a process in its gate is never
        stopped before the gate could have opened.  Every reader of the wait uses this."""
        return self.download_complete if self.stop_wait is None else self.stop_wait

    def scaled(self, factor: float) -> Timeouts:
        """Every wait multiplied by ``factor`` (an unset ``stop_wait`` stays unset)."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        scaled: dict[str, Any] = {k: None if v is None else v * factor for k, v in values.items()}
        return Timeouts(**scaled)

    @classmethod
    def fast(cls) -> Timeouts:
        """Scaled-down timeouts for tests and scenarios: seconds, not hours."""
        return cls(
            download_complete=5.0,
            submit_update=5.0,
            heartbeat_interval=0.2,
            heartbeat=2.0,
            pre_init=10.0,
            execution=15.0,
            stop_grace=1.0,
            stop_poll=0.1,
            download_retry_delay=0.1,
            download_connect=2.0,
            stop_wait=5.0,
        )


@dataclass(frozen=True)
class TensorSpec:
    """The tensors each site returns per round; ``count == 0`` means nothing to download."""

    count: int = 4
    size_bytes: int = 64 * 1024
    dtype: str = "float64"


@dataclass(frozen=True)
class JobConfig:
    """One federated job: R rounds over S sites, each site running a real subprocess."""

    sites: int = 1
    rounds: int = 1
    launch_once: bool = False
    tensors: TensorSpec = field(default_factory=TensorSpec)
    timeouts: Timeouts = field(default_factory=Timeouts)
    download_retries: int = DOWNLOAD_RETRIES
    chunk_bytes: int = DOWNLOAD_CHUNK_BYTES
    validate_rounds: tuple[int, ...] = ()
    """Rounds whose task is ``validate``: the result carries metrics, no tensors."""
    seed: int = 0
    named_sites: tuple[str, ...] = ()
    """The sites' names (scenario key ``job.site_names``), one per site; empty: the
    default ``site-1..site-N``.  Only a target that declares ``named_sites`` runs them."""
    name: str | None = None
    """The job's name (scenario key ``job.name``); ``None``: the target's default."""

    def __post_init__(self) -> None:
        # A tuple even when given a list (a config read back from JSON compares equal).
        object.__setattr__(self, "named_sites", tuple(self.named_sites))
        if self.named_sites and len(self.named_sites) != self.sites:
            raise ValueError(
                f"{len(self.named_sites)} site names for {self.sites} sites: {self.named_sites}"
            )

    def site_names(self) -> list[str]:
        """Every site's name, in order: the given ones, else ``site-1..site-N``."""
        if self.named_sites:
            return list(self.named_sites)
        return default_site_names(self.sites)

    @property
    def has_names(self) -> bool:
        """Whether the job names its sites or itself (a target must declare support)."""
        return bool(self.named_sites) or self.name is not None


def default_site_names(sites: int) -> list[str]:
    """``site-1 .. site-N``: the names of a job that gives none."""
    return [f"site-{i + 1}" for i in range(sites)]


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a site or a job, or ``None`` when it can.

    Refused: the empty name; leading or trailing whitespace (invisible in a report, and
    stripped by many tools, so the name would not round-trip); a control character, line
    or paragraph separator or lone surrogate (:data:`REFUSED_CATEGORIES`); a path
    separator, ``.`` and ``..`` (a name is one directory of a workspace); more than
    :data:`MAX_NAME_BYTES` bytes of UTF-8.  Everything else is allowed on purpose:
    spaces, quotes, commas, brackets, ``$``, non-ASCII letters, so a launcher that
    quotes or splits a name badly shows it.
    """
    if not name:
        return "a name must not be empty"
    if name != name.strip():
        return "a name must not start or end with whitespace (it would not round-trip)"
    for char in name:
        category = unicodedata.category(char)
        if category in REFUSED_CATEGORIES:
            return (
                f"{REFUSED_CATEGORIES[category]} (U+{ord(char):04X}) cannot be in a name: "
                "the OS refuses NUL in an environment variable, a line break splits a log line"
            )
        if char in PATH_SEPARATORS:
            return f"{char!r} cannot be in a name: a name is one directory of a workspace"
    if name in (".", ".."):
        return f"{name!r} cannot be a name: it is a directory of its own in every path"
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        return (
            f"a name is at most {MAX_NAME_BYTES} bytes of UTF-8 (one path component), "
            f"this one is {size}"
        )
    return None
