"""Run a command in a terminal on the target, as an operator types it, and stop when the command has ended.

Some commands behave differently without a tty (`certbot renew` sleeps at random first when run from cron;
`sudo` may refuse). The kit used util-linux's `script -qec CMD /dev/null` for that, and on Ubuntu 24.04 it
sometimes kept waiting after its child had ended (its output complete) until the kit's bound ran out: 90 s
lost, seen in about one in 200 troubleshooting commands run through `sudo`.

`in_terminal(command)` is the shell text for the target instead: the target's own python3 opens a pty, runs
`sh -c COMMAND` on it, copies its output, and stops once the shell has exited and the pty has been quiet for
a moment, even if a process the command left behind still holds the pty. Its exit status is the command's
(128 + N when a signal N ended it).
"""

from __future__ import annotations

import shlex

# stdlib only (it runs with the target's python3); no single quote inside, so shlex.quote keeps it one word
_PROGRAM = """\
import os, pty, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", sys.argv[1]])
out = sys.stdout.buffer
status = None
while True:
    if select.select([fd], [], [], 0.2)[0]:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if data:
            out.write(data)
            out.flush()
            continue
        if status is None:
            status = os.waitpid(pid, 0)[1]
        break
    if status is not None:
        break
    done, code = os.waitpid(pid, os.WNOHANG)
    if done:
        status = code
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def in_terminal(command: str) -> str:
    """Shell text that runs `command` (shell text itself) in a pty on the target and ends when it has ended."""
    return f"python3 -c {shlex.quote(_PROGRAM)} {shlex.quote(command)}"
