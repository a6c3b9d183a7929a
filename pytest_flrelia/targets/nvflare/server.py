"""The server stand-in: an in-process root ``Cell`` that really pulls the tensors.

It stands where NVFlare's server job would: every site's CJ sends its SubmitUpdate to
it over CellNet (``server_command`` / ``submit_update``).  That channel is a stream
channel, so NVFlare's ``Adapter`` decodes the payload before our callback runs, and
decoding a ``LazyDownloadRef`` is NVFlare's own download: ``NumpyArrayDecomposer.download``
-> ``download_arrays`` -> ``download_object`` from the child's download service.  The
wrapper of ``NumpyArrayDecomposer.download`` (installed here, for this cell only)
records ``download_start`` / ``download_done`` (per array, sha256 of its bytes) /
``download_failed``; a download that fails fails that site's submit with NVFlare's own
words ("failed to download from site-N_...").

Aggregation is ours: the weighted average of the sites' models, each site's weight as its
result says, added in the order the results arrived (the reference model oracle
recomputes it in that order, bit for bit).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pytest_flrelia.contract.events import server_lane
from pytest_flrelia.contract.result import Array, RoundOutcome
from pytest_flrelia.contract.timeline import EventKind, Timeline
from pytest_flrelia.targets.nvflare import nv, wiring
from pytest_flrelia.targets.nvflare.child.boot import digest

SERVER_FQCN = "server"


@dataclass
class Submission:
    site: str
    round: int
    ok: bool
    error: str | None = None
    params: dict[str, Array] = field(default_factory=dict)
    weight: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


class Server:
    """The root cell, the rounds' bookkeeping and the FedAvg."""

    def __init__(self, timeline: Timeline, root_url: str, sites: list[str]) -> None:
        self.timeline = timeline.for_process(server_lane())
        self.root_url = root_url
        self.sites = sites
        self.round = 0
        self._lock = threading.Condition()
        self._submissions: dict[tuple[str, int], Submission] = {}
        self._download_errors: dict[tuple[str, int], str] = {}
        self._downloading: set[tuple[str, int]] = set()
        self._reasons: dict[tuple[str, int], str] = {}
        cell_mod = nv.module("fuel.f3.cellnet.cell")
        self.cell = cell_mod.Cell(
            fqcn=SERVER_FQCN, root_url=root_url, secure=False, credentials={},
            create_internal_listener=False,
        )
        self._defs = nv.module("fuel.f3.cellnet.defs")
        self._utils = nv.module("fuel.f3.cellnet.utils")
        self._fl_model_utils = nv.module("app_common.utils.fl_model_utils").FLModelUtils
        self.cell.register_request_cb(
            channel=self._defs.CellChannel.SERVER_COMMAND,
            topic=nv.module("apis.fl_constant").ServerCommandNames.SUBMIT_UPDATE,
            cb=self._on_submit,
        )
        self._wrap_download()

    def start(self) -> None:
        self.cell.start()

    def stop(self) -> None:
        self.cell.stop()

    # -- the download, observed ------------------------------------------------------

    def _wrap_download(self) -> None:
        cls = nv.module("app_common.decomposers.numpy_decomposers").NumpyArrayDecomposer
        real = getattr(cls, "download", None)
        if real is None:  # 2.7.1: arrays travel inline with the result, nothing is pulled
            return
        server = self

        def download(self: Any, from_fqcn: str, ref_id: str, *args: Any, **kwargs: Any) -> Any:
            cell = kwargs.get("cell", args[1] if len(args) > 1 else None)
            if cell is not server.cell:
                return real(self, from_fqcn, ref_id, *args, **kwargs)
            site = wiring.site_of_fqcn(from_fqcn)
            round = server.round
            server.timeline.record(
                EventKind.DOWNLOAD_START, site=site, round=round, source=from_fqcn, ref_id=ref_id
            )
            started = time.monotonic()
            key = (site or from_fqcn, round)
            with server._lock:
                server._downloading.add(key)
            error: str | None = "did not return"
            try:
                err, items = real(self, from_fqcn, ref_id, *args, **kwargs)
                error = str(err) if err else None
                for name, array in ({} if err else items or {}).items():
                    server.timeline.record(
                        EventKind.DOWNLOAD_DONE, site=site, round=round, name=name,
                        bytes_digest=digest(array), nbytes=int(np.asarray(array).nbytes),
                    )
                return err, items
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                server._download_ended(key, from_fqcn, error, started)

        cls.download = download

    def _download_ended(
        self, key: tuple[str, int], from_fqcn: str, error: str | None, started: float
    ) -> None:
        """A pull ended: a failure is recorded (NVFlare's words) and becomes the site's
        error before anyone waiting on the pull is woken."""
        round = key[1]
        if error is not None:
            reason = f"failed to download from {from_fqcn}: {error}"
            self.timeline.record(
                EventKind.DOWNLOAD_FAILED, site=wiring.site_of_fqcn(from_fqcn), round=round,
                reason=reason,
                seconds=round_seconds(started),
            )
        with self._lock:
            if error is not None:
                self._download_errors[key] = reason
            self._downloading.discard(key)
            self._lock.notify_all()

    # -- submissions -----------------------------------------------------------------

    def _on_submit(self, request: Any) -> Any:
        origin = str(request.get_header(self._defs.MessageHeaderKey.ORIGIN, ""))
        site = origin[: -len("_cj")] if origin.endswith("_cj") else origin
        shareable = request.payload
        round = self.round
        try:
            submission = self._submission(site, round, shareable)
        except Exception as exc:  # an undecodable result fails the site, with the reason
            submission = Submission(site, round, ok=False, error=f"{type(exc).__name__}: {exc}")
        self.timeline.record(
            EventKind.SUBMIT, site=site, round=round, ok=submission.ok, error=submission.error
        )
        with self._lock:
            self._submissions[(site, round)] = submission
            self._lock.notify_all()
        return self._utils.make_reply(self._defs.ReturnCode.OK)

    def _submission(self, site: str, round: int, shareable: Any) -> Submission:
        rc = shareable.get_return_code()
        if rc != "OK":
            with self._lock:
                why = self._reasons.get((site, round), f"the task failed ({rc})")
            return Submission(site, round, ok=False, error=f"{site}: {why}")
        model = self._fl_model_utils.from_shareable(shareable)
        params = {str(k): np.asarray(v) for k, v in (model.params or {}).items()}
        weight = float((model.meta or {}).get("weight", 0.0))
        return Submission(site, round, ok=True, params=params, weight=weight,
                          metrics=dict(model.metrics or {}))

    def reason(self, site: str, round: int, why: str) -> None:
        """Why ``site``'s task of ``round`` failed, before its failed result is submitted
        (the reply carries only a return code)."""
        with self._lock:
            self._reasons[(site, round)] = why

    def failed(self, site: str, round: int, error: str, wait: float = 60.0) -> None:
        """A site's CJ could not submit.  If the server is still pulling that site's
        tensors (the SubmitUpdate timed out while its decode downloads), the download's
        own failure, when it comes, is the site's error: it says what went wrong."""
        deadline = time.monotonic() + wait
        with self._lock:
            while (site, round) in self._downloading and time.monotonic() < deadline:
                self._lock.wait(0.1)
            error = self._download_errors.get((site, round), error)
        self.timeline.record(EventKind.SUBMIT, site=site, round=round, ok=False, error=error)
        with self._lock:
            self._submissions.setdefault((site, round), Submission(site, round, False, error))
            self._lock.notify_all()

    def wait_round(
        self, round: int, timeout: float, stop: threading.Event
    ) -> dict[str, Submission]:
        """Every site's submission of ``round``, in arrival order; a site whose download
        failed, or that did not submit within ``timeout``, is a failed submission."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                missing = [s for s in self.sites if (s, round) not in self._submissions]
                for site in missing:
                    error = self._download_errors.get((site, round))
                    if error is not None:
                        self._submissions[(site, round)] = Submission(site, round, False, error)
                missing = [s for s in self.sites if (s, round) not in self._submissions]
                left = deadline - time.monotonic()
                if not missing or left <= 0 or stop.is_set():
                    break
                self._lock.wait(min(left, 0.1))
            got = {s: sub for (s, r), sub in self._submissions.items() if r == round}
        for site in missing:
            if site not in got:
                got[site] = Submission(
                    site, round, False,
                    "stopped" if stop.is_set()
                    else f"{site}: no result within submit_update {timeout:g}s",
                )
        return got

    # -- aggregation -----------------------------------------------------------------

    def aggregate(
        self, round: int, model: Mapping[str, Array], submissions: Mapping[str, Submission],
        outcome: RoundOutcome,
    ) -> dict[str, Array]:
        """The weighted average, summed in arrival order (``submissions``' order)."""
        sites = list(submissions)
        total_weight = math.fsum(s.weight for s in submissions.values())
        averaged: dict[str, Array] = {}
        for name, array in model.items():
            total = np.zeros(array.size, dtype=np.float64)
            for site in sites:
                values = submissions[site].params[name].reshape(-1)
                total[0 : array.size] += submissions[site].weight * values
            averaged[name] = (total / total_weight).astype(array.dtype).reshape(array.shape)
            outcome.aggregation_order[name] = [(site, 0, array.size) for site in sites]
            outcome.checksums[name] = hashlib.sha256(averaged[name].tobytes()).hexdigest()
            outcome.bytes_downloaded += sum(
                int(submissions[s].params[name].nbytes) for s in sites
            )
        self.timeline.record(EventKind.AGGREGATED, round=round, sites=len(sites))
        return averaged


def round_seconds(started: float) -> float:
    return round(time.monotonic() - started, 3)


__all__ = ["SERVER_FQCN", "Server", "Submission"]
