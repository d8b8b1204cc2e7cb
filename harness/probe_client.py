"""Host side of the request agents: a long-lived `http_probe.py` on the remote vantage (lab client container,
this machine, or an ssh host), fed one request per line, so hundreds of requests cost one process start (one
`docker exec` or one ssh session). Every request is bounded by its own timeout plus a margin, the whole
session by `max_requests`."""

from __future__ import annotations

import json
import select
import subprocess
from collections.abc import Sequence
from typing import Any

from harness.errors import LabError
from harness.vantage import Vantage

AGENT = "http_probe.py"
ANSWER_MARGIN = 30.0  # seconds beyond a request's own timeout before the agent is judged hung


class ProbeSession:
    """One http_probe agent on `vantage`. `agent_args` are the agent's flags (harness.vantage.agent_flags:
    --connect ADDR, --cafile F), so requests can name the site by its domain on any vantage."""

    def __init__(self, vantage: Vantage, *, max_requests: int = 2000, user: str = "root",
                 agent_args: Sequence[str] = ()) -> None:
        self.vantage = vantage
        self.max_requests = max_requests
        self.sent = 0
        argv = vantage.popen_argv([vantage.python, "-u", vantage.agent_path(AGENT), *agent_args], user=user)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.sent >= self.max_requests:
            raise LabError(f"probe session exceeded its bound of {self.max_requests} requests")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.sent += 1
        try:
            self.proc.stdin.write(json.dumps({"id": self.sent, **request}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise LabError(f"the probe agent on {self.vantage.describe()} stopped: {self._stderr()}") from None
        # the agent bounds each request by its own timeout; this bounds the agent (a hung docker exec or ssh)
        bound = float(request.get("timeout", 10)) + ANSWER_MARGIN
        ready, _, _ = select.select([self.proc.stdout], [], [], bound)
        if not ready:
            self.proc.kill()
            raise LabError(f"the probe agent on {self.vantage.describe()} did not answer within {bound:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            raise LabError(f"the probe agent on {self.vantage.describe()} stopped: {self._stderr()}")
        return json.loads(line)

    def _stderr(self) -> str:
        """What the stopped agent said (it has exited, so reading to EOF is bounded)."""
        if self.proc.stderr is None:
            return ""
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.stderr.read().strip()[-300:]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self) -> ProbeSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
