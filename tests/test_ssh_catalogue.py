"""The read-only catalogue and its small grammar (issue 27): what a host the kit did not build may be sent."""

from __future__ import annotations

import gzip
import json
import shlex
import tarfile
from pathlib import Path

import pytest

from harness.backends import readonly_script
from harness.backends.readonly_script import Output, refusal
from harness.backends.ssh_catalogue import CATALOGUE, MutationRefused, env_refusal, match

RECORDED = Path(__file__).parent / "data" / "recorded-runs" / "ssh.tar.gz"

# Commands an operator or a runbook could plausibly write in a troubleshooting section, that look like reading
# but write a file, remount, rotate or vacuum the journal, restart something, or print a secret. Every one must
# be refused before anything is sent. (The first ones are the examples the issue reproduced with the real tools.)
LOOKS_READ_ONLY_BUT_IS_NOT = [
    # writes a file
    "openssl x509 -in /etc/letsencrypt/live/stdb/cert.pem -noout -text -out=/tmp/x",
    "openssl x509 -in /etc/letsencrypt/live/stdb/cert.pem --out /tmp/x",
    "openssl x509 -in /etc/letsencrypt/live/stdb/cert.pem -out /tmp/x",
    "openssl s_client -connect 127.0.0.1:443 -sess_out /tmp/s",
    "sed --expr 'w /tmp/x' /etc/fstab",
    "sed -n 'w /tmp/x' /etc/nginx/nginx.conf",
    "awk '{print > \"/tmp/f\"}' /etc/fstab",
    "awk '{print $1 >> \"/tmp/f\"}' /etc/passwd",
    "journalctl --cursor-file=/tmp/cursor -u spacetimedb",
    "journalctl --cursor-file /tmp/cursor -u spacetimedb",
    "blkid -c /tmp/blkid.tab",
    "blkid -c/tmp/blkid.tab -s UUID -o value /dev/nvme1n1",
    "nginx -t -e /tmp/nginx-error.log",
    "nginx -T -c /tmp/evil.conf",
    "nginx -t -g 'pid /tmp/x.pid;'",
    "certbot certificates --logs-dir /tmp/logs",
    "certbot certificates",
    "sudo certbot renew --dry-run",
    "curl -s -o /tmp/page http://127.0.0.1:3000/v1/ping",
    "curl -s --output /tmp/page http://127.0.0.1:3000/v1/ping",
    "curl -s -D /tmp/headers http://127.0.0.1:3000/v1/ping",
    "curl -s -c /tmp/jar http://127.0.0.1:3000/v1/ping",
    "curl -s --trace /tmp/trace http://127.0.0.1:3000/v1/ping",
    "find /stdb -fprint /tmp/list",
    "find /stdb -fls /tmp/list",
    "find /etc -name '*.conf' -exec cp {} /tmp \\;",
    "find /stdb -name '*.tmp' -delete",
    "ss -D /tmp/dump",
    "ls -l /stdb > /tmp/listing",
    "cat /etc/fstab | tee /tmp/fstab",
    "systemctl status spacetimedb >> /tmp/log",
    "ps aux 1>/tmp/ps",
    "lsblk -o NAME > /dev/sda",
    "sort -o /etc/fstab /etc/fstab",
    "echo 'x' | sudo tee -a /etc/fstab",
    "cp /etc/fstab /etc/fstab.bak",
    "dd if=/dev/nvme1n1 of=/tmp/disk bs=1M count=1",
    # changes a service, the journal, a mount or the firewall
    "systemctl --prop status restart nginx",
    "systemctl -p status restart nginx",
    "systemctl status restart nginx && systemctl restart nginx",
    "systemctl restart spacetimedb",
    "systemctl daemon-reload",
    "systemctl kill spacetimedb",
    "systemctl show spacetimedb; systemctl stop spacetimedb",
    "journalctl --rotate",
    "journalctl --vacuum-size=1M",
    "journalctl --vacuum-time=1s",
    "journalctl --flush",
    "journalctl --sync -u nginx",
    "mount -o remount,ro /stdb",
    "sudo mount -a",
    "findmnt --verify --target /stdb; umount /stdb",
    "ufw reload",
    "ufw status verbose && ufw disable",
    "iptables -F",
    "iptables -L INPUT -F",
    "nft flush ruleset",
    "ss -K dst 10.0.0.1",
    "nginx -s reload",
    "hostname evil",
    "date -s '2020-01-01'",
    "kill -HUP 1",
    "spacetime server set-default local",
    # prints a secret
    "cat /etc/shadow",
    "sudo -n cat /etc/shadow",
    "getent shadow",
    "getent gshadow root",
    "cat /etc/letsencrypt/live/stdb.example.com/privkey.pem",
    "cat /etc/letsencrypt/archive/stdb.example.com/privkey1.pem",
    "openssl x509 -in /etc/letsencrypt/live/stdb/privkey.pem -noout",
    "cat /etc/ssh/ssh_host_ed25519_key",
    "cat /root/.ssh/id_ed25519",
    "cat /home/ubuntu/.spacetime/cli.toml",
    "sudo -u spacetimedb cat /stdb/.config/spacetime/cli.toml",
    "cat /root/.aws/credentials",
    "cat /proc/1/environ",
    "cat /etc/sudoers",
    "grep -r token /home/ubuntu/.config",
    "grep password /etc/shadow",
    "tail -n 5 /etc/letsencrypt/accounts/acme/private_key.json",
    # hides a program or an option the gate cannot see
    "echo $(systemctl restart nginx)",
    "echo `rm -rf /stdb`",
    "cat \"$HOME/.aws/credentials\"",
    "ls /etc/nginx/*",
    "cat ~/.spacetime/cli.toml",
    "LD_PRELOAD=/tmp/x.so ls /stdb",
    "PAGER='sh -c id' systemctl status nginx",
    "sudo -i systemctl status nginx",
    "sudo -E systemctl status nginx",
    "sudo -s ls",
    "bash -c 'systemctl status nginx'",
    "sh -c 'rm -rf /stdb'",
    "script -qec 'sudo journalctl -u spacetimedb --no-pager | tail -20' /dev/null",
    "timeout 5 rm -rf /stdb",
    "env rm -rf /stdb",
    "xargs rm < /tmp/list",
    "systemctl status nginx & touch /tmp/x",
    "cat /etc/fstab <<EOF",
    "journalctl -u spacetimedb --no-pager | sh",
    "journalctl -u spacetimedb --no-pager | tail -20 | tee /tmp/x",
    "ls -la /stdb | xargs rm",
    "sudo -u spacetimedb /stdb/spacetime version list",
    "/stdb/spacetime start",
    "python3 -c 'import os'",
    "tail -f /var/log/nginx/error.log",
    "less /etc/nginx/nginx.conf",
    "vi /etc/fstab",
]

# What the reference runbook's troubleshooting and the kit's checks send that only reads: every one is accepted.
READ_ONLY = [
    "sudo journalctl -u spacetimedb --no-pager | tail -20",
    "sudo journalctl -u nginx --no-pager | tail -20",
    "sudo ls -lah /stdb/spacetime",
    "sudo nginx -t",
    "systemctl status --no-pager -n 20 spacetimedb",
    "(iptables -S 2>&1; echo '-- nft --'; nft list ruleset 2>&1) | head -c 6000",
    "grep -E '^(ENABLED|IPV6)=' /etc/ufw/ufw.conf 2>&1",
    "find /stdb -xdev \\( ! -user spacetimedb -o ! -group spacetimedb \\) -printf '%u:%g\\t%p\\n' | head -20",
    "sleep 3; systemctl show -p MainPID -p NRestarts --value spacetimedb; systemctl is-active spacetimedb",
    "sudo -u spacetimedb stat -L -c '%d:%i' /proc/1395/cwd /stdb && findmnt -n -o SOURCE,FSTYPE --target /stdb",
    "curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:3000/v1/ping",
    "openssl x509 -in /etc/letsencrypt/live/stdb.example.com/fullchain.pem -noout -subject -dates",
    "command -v ss",
    "ufw app info 'Nginx Full' 2>&1",
    "lsblk -dn -o NAME,SERIAL",
    "sha256sum -z -- /etc/shadow /etc/letsencrypt/live/x/privkey.pem",
]


def test_the_corpus_is_big_enough_and_distinct() -> None:
    assert len(set(LOOKS_READ_ONLY_BUT_IS_NOT)) == len(LOOKS_READ_ONLY_BUT_IS_NOT) >= 60


@pytest.mark.parametrize("command", LOOKS_READ_ONLY_BUT_IS_NOT)
def test_commands_that_write_or_print_secrets_are_refused(command: str) -> None:
    reason = refusal(command)
    assert reason, f"accepted: {command}"
    assert "\n" not in reason and len(reason) < 300


@pytest.mark.parametrize("command", READ_ONLY)
def test_read_only_commands_are_accepted(command: str) -> None:
    assert refusal(command) is None


def test_every_command_of_a_recorded_read_only_ssh_run_is_in_the_catalogue(tmp_path: Path) -> None:
    """The set the catalogue must cover is read off a real run (the recorded ssh run's tapes), not guessed."""
    with tarfile.open(RECORDED) as archive:
        archive.extractall(tmp_path, filter="data")
    commands = set()
    for tape in tmp_path.glob("*/histories/tape-*.jsonl.gz"):
        for line in gzip.open(tape, "rt"):
            entry = json.loads(line)
            if entry.get("p") == "testbed.target.run" and entry.get("k") == "call":
                commands.add(json.loads(entry["a"])[0][0])
    assert len(commands) > 30
    outside = {c: refusal(c) for c in commands if refusal(c)}
    assert not outside, outside


def test_options_match_only_as_listed() -> None:
    found = match(["systemctl", "show", "-p", "MainPID", "--value", "spacetimedb"])
    assert not isinstance(found, str) and found.name == "unit properties"
    assert refusal("systemctl show -p MainPID --value spacetimedb") is None
    for spelling in ("--prop=MainPID", "--property=MainPID", "-pMainPID", "--val"):
        assert refusal(f"systemctl show {spelling} spacetimedb"), spelling
    assert refusal("systemctl show -p MainPID restart nginx") is None  # `restart` is a unit to show, not a verb
    assert refusal("systemctl show -p restart nginx"), "a property is capitalised: `restart` is not one"
    assert refusal("systemctl show -- -p")  # an operand that looks like an option is not a unit
    assert refusal("journalctl -u 'spacetimedb; rm -rf /'")
    assert refusal("cat /etc/nginx/../shadow") and refusal("cat /etc//shadow")
    assert refusal("stat -c %s /etc/shadow") is None  # metadata of a secret is not the secret
    assert refusal("/usr/bin/ss --numeric --listening") is None
    assert refusal("/tmp/ss --numeric --listening")  # a program by another path is another program


def test_every_entry_is_a_program_with_words_and_a_reason_to_exist() -> None:
    names = [e.name for e in CATALOGUE]
    assert len(names) == len(set(names))
    for entry in CATALOGUE:
        assert entry.words and all(w and " " not in w for w in entry.words)
        assert not (entry.flags & set(entry.valued)), entry.name


def test_environment_is_a_closed_list() -> None:
    assert env_refusal({"LC_ALL": "C"}) is None
    for name, value in (("PATH", "/tmp"), ("LD_PRELOAD", "/x.so"), ("SYSTEMD_PAGER", "sh"), ("LC_ALL", "x")):
        assert env_refusal({name: value}), name


def _fake_host(answers: dict[str, tuple[int, str, str]]) -> tuple[list[tuple[list[str], str]], readonly_script.Send]:
    sent: list[tuple[list[str], str]] = []

    def send(argv: list[str], user: str, timeout: float) -> tuple[int, str, str, bool]:
        sent.append((argv, user))
        status, out, err = answers.get(shlex.join(argv), (0, "", ""))
        return status, out, err, False
    return sent, send


def test_pipes_and_text_processing_run_here_not_on_the_host() -> None:
    journal = "".join(f"line {i}\n" for i in range(100))
    sent, send = _fake_host({"journalctl -u spacetimedb --no-pager": (0, journal, "")})
    done = readonly_script.run("sudo journalctl -u spacetimedb --no-pager | tail -20", send, user="ubuntu",
                               timeout=30)
    assert sent == [(["journalctl", "-u", "spacetimedb", "--no-pager"], "root")]
    assert done.out == "".join(f"line {i}\n" for i in range(80, 100)) and done.status == 0

    conf = "ENABLED=yes\nLOGLEVEL=low\nIPV6=yes\n"
    sent, send = _fake_host({"cat -- /etc/ufw/ufw.conf": (0, conf, "")})
    done = readonly_script.run("grep -E '^(ENABLED|IPV6)=' /etc/ufw/ufw.conf 2>&1", send, user="root", timeout=30)
    assert sent == [(["cat", "--", "/etc/ufw/ufw.conf"], "root")] and done.out == "ENABLED=yes\nIPV6=yes\n"

    sent, send = _fake_host({"iptables -S": (0, "-P INPUT ACCEPT\n", "warn\n"), "nft list ruleset": (1, "", "no\n")})
    done = readonly_script.run("(iptables -S 2>&1; echo '-- nft --'; nft list ruleset 2>&1) | head -c 30", send,
                               user="root", timeout=30)
    assert done.out == "-P INPUT ACCEPT\nwarn\n-- nft --" and done.status == 0 and len(sent) == 2


def test_and_or_and_exit_statuses() -> None:
    sent, send = _fake_host({"systemctl is-active x": (3, "inactive\n", "")})
    done = readonly_script.run("systemctl is-active x && systemctl status x", send, user="root", timeout=30)
    assert done.status == 3 and len(sent) == 1
    done = readonly_script.run("systemctl is-active x || echo down", send, user="root", timeout=30)
    assert done.out == "inactive\ndown\n" and done.status == 0
    done = readonly_script.run("systemctl is-active x 2>/dev/null >/dev/null; echo $?".replace("; echo $?", ""),
                               send, user="root", timeout=30)
    assert done == Output(3, "", "", False)


def test_grep_context_numbers_and_basic_regex() -> None:
    text = "a\nb (x)\nc\nd\ne\nf\nb (x)\n"
    sent, send = _fake_host({"cat -- /etc/nginx/nginx.conf": (0, text, "")})
    done = readonly_script.run("grep -n -A1 'b (x)' /etc/nginx/nginx.conf", send, user="root", timeout=30)
    assert done.out == "2:b (x)\n3-c\n--\n7:b (x)\n"
    assert readonly_script.run("grep -c '\\(x\\)' /etc/nginx/nginx.conf", send, user="root", timeout=30).out == "2\n"
    assert readonly_script.run("grep -q zzz /etc/nginx/nginx.conf", send, user="root", timeout=30).status == 1


def test_a_refusal_is_one_line_that_names_the_way_out() -> None:
    error = MutationRefused("systemctl restart\nnginx", "`systemctl restart` is not in the read-only catalogue",
                            host="db1")
    line = error.one_line()
    assert "\n" not in line and "db1" in line and "--allow-mutation" in line


def test_random_text_always_gets_an_answer() -> None:
    """Shell-ish garbage: refusal() answers (a reason or None), never raises."""
    import random

    rng = random.Random(27)
    alphabet = "ab -|;&()<>'\"\\$`*#~\n12/"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        answer = refusal(text)
        assert answer is None or isinstance(answer, str)
