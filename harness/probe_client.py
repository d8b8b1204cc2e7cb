"""Host side of the lab request agents: a long-lived `http_probe.py` in a lab container, fed one request per
line, so hundreds of requests cost one `docker exec`. Every request is bounded by its own timeout, the
whole session by `max_requests`."""

from __future__ import annotations

import json
import select
import subprocess
from pathlib import Path
from typing import Any

from harness.errors import LabError

AGENTS = Path(__file__).resolve().parent / "agents"
ANSWER_MARGIN = 30.0  # seconds beyond a request's own timeout before the agent is judged hung


class ProbeSession:
    def __init__(self, container: str, *, max_requests: int = 2000, user: str = "root") -> None:
        self.container = container
        self.max_requests = max_requests
        self.sent = 0
        self.proc = subprocess.Popen(["docker", "exec", "-i", "-u", user, container, "python3", "-u", "-c",
                                      (AGENTS / "http_probe.py").read_text()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.sent >= self.max_requests:
            raise LabError(f"probe session exceeded its bound of {self.max_requests} requests")
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.sent += 1
        self.proc.stdin.write(json.dumps({"id": self.sent, **request}) + "\n")
        self.proc.stdin.flush()
        # the agent bounds each request by its own timeout; this bounds the agent (a hung docker exec)
        bound = float(request.get("timeout", 10)) + ANSWER_MARGIN
        ready, _, _ = select.select([self.proc.stdout], [], [], bound)
        if not ready:
            self.proc.kill()
            raise LabError(f"the probe agent in {self.container} did not answer within {bound:.0f}s")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise LabError(f"the probe agent in {self.container} stopped: {err.strip()[-300:]}")
        return json.loads(line)

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
