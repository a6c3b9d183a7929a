"""Planted bugs that live in the training subprocess (loaded there by import path, with
``tests`` on the child's ``PYTHONPATH``: :class:`planted.target.PlantedTarget` adds it).
Imports neither pytest nor the harness."""

from __future__ import annotations

import socket
from typing import Any

from reference_impl.agent import Agent
from reference_impl.download import DownloadService, _Published


class EarlyResumeService(DownloadService):
    """``resume-last-chunk-early``: a download resumed at a tensor's last chunk is served
    from one chunk earlier (an off-by-one of the path that handles a short last chunk), so
    the downloader finds every retry out of place and gives up: a corrupt last chunk,
    which a retry must repair, fails the job.  A resume at any other chunk is correct."""

    def _stream(self, sock: socket.socket, entry: _Published, offset: Any) -> None:
        ref = entry.ref
        last = ((ref.nbytes - 1) // ref.chunk_bytes) * ref.chunk_bytes if ref.nbytes else 0
        if isinstance(offset, int) and offset == last and offset > 0:
            offset -= ref.chunk_bytes
        super()._stream(sock, entry, offset)


class EarlyResumeAgent(Agent):
    """Serves its tensors from an :class:`EarlyResumeService` (``resume-last-chunk-early``)."""

    service_class = EarlyResumeService
