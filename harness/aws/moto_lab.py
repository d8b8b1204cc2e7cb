"""A moto server on 127.0.0.1 for one run: started as a child process, stopped by its pid."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Literal, overload

from harness.errors import LabError

if TYPE_CHECKING:  # stubs only (the test extra's types-boto3[ec2,backup]): not needed at run time
    from types_boto3_backup.client import BackupClient
    from types_boto3_ec2.client import EC2Client

REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
               "AWS_DEFAULT_REGION": REGION}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    START_ATTEMPTS = 3  # a port picked free can be taken by another process before moto binds it

    def __init__(self, log: Path | None = None, run_id: str = "") -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.run_id = run_id  # recorded as the run's helper: a dead run's moto server is stopped by the sweep
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> MotoServer:
        """Start moto's process without waiting for it: a run launches it before its lab comes up and waits for
        it (`start`) only when the runbook's console steps are performed. The caller stops it (`stop`)."""
        if self.proc is None:
            self._launch()
        return self

    def start(self, timeout: float = 60.0) -> MotoServer:
        """Start moto on a free loopback port (or take the process `launch` started) and wait (bounded by
        `timeout`) until it answers there. Interrupted (Ctrl-C, SIGTERM) or failed, the server is stopped before
        this returns: nothing keeps listening."""
        deadline = time.monotonic() + timeout
        problem = ""
        try:
            for attempt in range(self.START_ATTEMPTS):
                if attempt:
                    self.port = _free_port()
                    self.url = f"http://127.0.0.1:{self.port}"
                if self.proc is None:
                    self._launch()
                problem = self._answers(deadline, timeout)
                if not problem:
                    return self
                self.stop()
                if time.monotonic() >= deadline:
                    break
        except BaseException:
            self.stop()
            raise
        raise LabError(f"moto_server did not start: {problem}")

    def _launch(self) -> None:
        exe = shutil.which("moto_server")
        argv = [exe] if exe else [sys.executable, "-m", "moto.server"]
        log = open(self.log, "ab") if self.log else None  # noqa: SIM115 - closed once the child has it
        try:
            self.proc = subprocess.Popen([*argv, "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log if log is not None else subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError as exc:
            raise LabError("moto's server is not installed", hint="pip install 'moto[server]'") from exc
        finally:
            if log is not None:
                log.close()
        if self.run_id:
            from harness.lab import runs

            runs.add_helper(self.run_id, self.proc.pid, "moto_server")

    def _answers(self, deadline: float, timeout: float) -> str:
        from harness.lab.procs import port_owned_by

        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"it exited with {self.proc.returncode} (port {self.port}; log: {self.log or 'none'})"
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2)  # noqa: S310 - loopback only
            except OSError:
                time.sleep(0.3)
                continue
            if port_owned_by(self.port, {self.proc.pid}) is False:  # another process answers on our port
                return f"port {self.port} is answered by another process"
            return ""
        return f"it did not answer on {self.url} within {timeout:.0f}s"

    def stop(self) -> None:
        """Stop the server's whole session (TERM, KILL after 10 s). Idempotent."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except OSError:
                    break
                try:
                    self.proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@overload
def client(service: Literal["ec2"], endpoint_url: str | None, region: str = REGION) -> EC2Client: ...
@overload
def client(service: Literal["backup"], endpoint_url: str | None, region: str = REGION) -> BackupClient: ...
def client(service: Literal["ec2", "backup"], endpoint_url: str | None,
           region: str = REGION) -> EC2Client | BackupClient:
    """A boto3 client; with an endpoint (moto) it uses moto's fixed test credentials."""
    import boto3
    from botocore.config import Config

    if endpoint_url:
        # no retries against moto: an API it lacks answers 500, and retrying only delays saying so
        return boto3.client(service, endpoint_url=endpoint_url, region_name=region,
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            config=Config(retries={"max_attempts": 1}))
    return boto3.client(service, region_name=os.environ.get("AWS_DEFAULT_REGION", region))
