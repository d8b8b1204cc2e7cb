"""The ssh backend's read-only guard (fast, no lab): the probes the kit really sends pass, mutations are refused,
and syntax the guard does not understand is refused rather than guessed."""

from __future__ import annotations

import random

import pytest

from harness.backends.ssh_digest import digest_script
from harness.backends.ssh_readonly import MutationRefused, env_refusal, parse, refusal
from harness.errors import KitError

# what the kit sends to a target: run.py's environment facts, the suites' probes, the reboot scenario's PROBES
ENVIRONMENT_FACTS = [
    ". /etc/os-release && echo \"$PRETTY_NAME\"", "uname -r", "systemctl --version | head -1", "nginx -v 2>&1",
    "certbot --version 2>&1", "python3 --version", "ufw status verbose 2>&1", "ss -Hltn 2>&1", "cat /etc/fstab 2>&1",
    "findmnt -n -o SOURCE,FSTYPE,OPTIONS --target /stdb 2>&1",
]
SUITE_PROBES = [
    "ufw status verbose 2>&1", "ufw show added 2>&1",
    "grep -n 'Nginx Full' -A4 /etc/ufw/applications.d/* 2>&1 | head -20",
    "grep -E '^(ENABLED|IPV6)=' /etc/ufw/ufw.conf 2>&1",
    "(iptables -S 2>&1; echo '-- nft --'; nft list ruleset 2>&1) | head -c 6000",
    "blkid -s UUID -o value /dev/nvme1n1", "cat /etc/fstab",
    "findmnt -n -o SOURCE,UUID,FSTYPE,OPTIONS --mountpoint /stdb", "lsblk -o NAME,SERIAL,SIZE,FSTYPE,UUID,MOUNTPOINTS",
    "stat -c '%U:%G %a' /stdb",
    "find /stdb -xdev \\( ! -user spacetimedb -o ! -group spacetimedb \\) -printf '%u:%g %p\\n' | head -20",
    "systemctl show -p MainPID --value spacetimedb", "cat /etc/systemd/system/spacetimedb.service",
    "systemctl cat spacetimedb | head -1", "systemctl is-enabled spacetimedb",
    "ls -l /etc/systemd/system/multi-user.target.wants/spacetimedb.service", "systemctl is-active spacetimedb",
    "systemctl status --no-pager -n 20 spacetimedb",
    "sleep 3; systemctl show spacetimedb -p MainPID -p NRestarts --value; systemctl is-active spacetimedb",
    "ps -o user:32=,pid=,args= --pid 812 --ppid 812", "ss -Hltn",
    "curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://127.0.0.1:3000/v1/ping",
    "stat -c '%U:%G %a %n' /stdb", "find /stdb -xdev ! -user spacetimedb -printf '%u %p\\n' | head -20",
    "curl -s --max-time 5 http://127.0.0.1:3000/v1/health",
    "ls -l /stdb/spacetime; test -x /stdb/spacetime",
    "systemctl show -p MainPID --value spacetimedb; systemctl is-active spacetimedb",
    "journalctl -u spacetimedb --no-pager -n 15", "curl -sf --max-time 2 http://127.0.0.1:3000/v1/ping",
    "curl -s -i --max-time 5 -X GET http://127.0.0.1/v1/database/x/schema",
    "curl -s -I -k --max-time 5 --resolve stdb.lab.test:443:127.0.0.1 https://stdb.lab.test/v1/ping",
    "systemctl is-enabled certbot.timer; systemctl is-active certbot.timer",
    "systemctl is-active certbot.service; pgrep -a certbot || true",
    "systemctl is-active spacetimedb; readlink /stdb/bin/current",
    "/stdb/spacetime --root-dir=/stdb sql -s local stdbc-probe 'SELECT * FROM probe'",
    "spacetime --version", "/stdb/bin/current/spacetime version list", "spacetime server list", "spacetime list",
    "stat -L -c '%d:%i' /proc/812/cwd /stdb && findmnt -n -o SOURCE,FSTYPE --target /stdb",
]
MORE_READS = [
    "nginx -T 2>&1 | head -50", "nginx -t", "certbot certificates", "openssl version",
    "openssl x509 -noout -subject -enddate -in /etc/letsencrypt/live/stdb.example/cert.pem",
    "openssl s_client -connect stdb.example:443 -servername stdb.example </dev/null 2>/dev/null "
    "| openssl x509 -noout -fingerprint -sha256",
    "ip -4 addr show", "ip route", "ip -br a", "ip route get 1.1.1.1", "ip link show dev eth0", "mount", "mount -l",
    "iptables -S", "iptables -nvL INPUT", "ip6tables -S", "nft list ruleset", "dpkg -l nginx", "dpkg -s nginx",
    "dpkg-query -W -f='${Version}\\n' nginx", "apt-cache policy nginx", "systemd-analyze time",
    "systemd-analyze blame | head", "systemctl list-timers --all --no-pager", "systemctl --failed --no-legend --plain",
    "journalctl -b -u nginx --no-pager | tail -15", "sed -n '1,20p' /etc/fstab", "sed 's/#.*//;/^$/d' /etc/fstab",
    "sed -ne '/server_name/p' /etc/nginx/sites-enabled/default",
    "awk '$1==\"deb\"{print $2; exit}' /etc/apt/sources.list", "awk -F: '$3>=1000 {print $1}' /etc/passwd",
    "date +%s", "date -u -d @0 +%FT%T", "date -Iseconds", "hostname -f", "file /stdb/spacetime",
    "sha256sum /etc/fstab", "md5sum /etc/fstab", "du -sh /stdb", "df -h /stdb", "id -u spacetimedb",
    "getent passwd spacetimedb", "wc -c < /etc/fstab", "sort -u /etc/group | cut -d: -f1 | uniq -c",
    "find /etc/nginx -type f -print0 | xargs -0 -r sha256sum", "timeout 5 curl -s http://127.0.0.1:3000/v1/ping",
    "env LC_ALL=C ls -la /", "LC_ALL=C sort -z < /dev/null | head -z -n 5", "echo a >&2",
    "cat /nope 2>/dev/null || true", "ls /etc &>/dev/null", "cd /etc && ls", "true &",
    "for f in /etc/nginx/sites-enabled/*; do echo \"== $f\"; cat \"$f\"; done",
    "while read -r line; do echo \"$line\"; done < /etc/fstab",
    "if systemctl is-active -q nginx; then echo up; elif true; then echo maybe; else echo down; fi",
    "x=$(cat /proc/uptime); echo ${x%% *}", "echo `uname -r`", "echo $((1 + 2))", "cat <(ls /)",
    "case $(uname) in Linux|linux) echo l;; *) echo o;; esac", "{ echo a; echo b; } | wc -l",
    "[ -d /stdb ] && echo yes", "test -f /etc/fstab && echo yes", "printf '%s\\n' a b", "! grep -q x /etc/fstab",
    "# a comment\nuname -a  # trailing comment", "ls \\\n  /etc", "set -e; set -o pipefail; uname",
    "until true; do :; done", "time -p ls", "echo \"$(echo \"$(uname -r)\")\"", "export LC_ALL=C; ls",
    "cat -- '/etc/my file'", "dpkg --status nginx", "sysctl -n kernel.hostname", "command -v spacetime",
]
READS = ENVIRONMENT_FACTS + SUITE_PROBES + MORE_READS

MUTATIONS = [
    ("systemctl restart nginx", "systemctl restart"), ("systemctl stop certbot.service", "systemctl stop"),
    ("systemctl daemon-reload", "daemon-reload"), ("systemctl enable --now nginx", "systemctl enable"),
    ("kill -9 812", "kill"), ("rm -rf /stdb", "rm"), ("echo x | tee /etc/x", "tee"), ("echo x > /etc/x", "writes"),
    ("echo x >> /tmp/x", "writes"), ("echo x 1>/etc/x", "writes"), ("echo x >| /etc/x", "writes"),
    ("cat /x &> /tmp/y", "writes"), ("ls 2>/tmp/err", "writes"), ("cat 3<>/etc/x", "<>"),
    ("sed -i s/a/b/ /etc/fstab", "sed -i"), ("sed -ibak s/a/b/ f", "sed -i"), ("sed --in-pl s/a/b/ f", "sed -i"),
    ("sed -n 'w /tmp/x' /etc/fstab", "writes"), ("sed 's/a/b/w /tmp/x' f", "writes"), ("sed -e 1e f", "runs"),
    ("curl -X POST http://127.0.0.1:3000/v1/x", "POST"), ("curl -XPUT http://a/", "PUT"),
    ("curl --request DELETE http://a/", "DELETE"), ("curl -d x=1 http://a/", "body"),
    ("curl --data-binary @f http://a/", "body"), ("curl -F f=@x http://a/", "body"), ("curl -T f http://a/", "body"),
    ("curl -o /tmp/x http://a/", "writes"), ("curl -sSo /etc/x http://a/", "writes"), ("curl -O http://a/x", "writes"),
    ("curl gopher://127.0.0.1:6379/_FLUSHALL", "gopher"), ("curl -K cfg http://a/", "body"),
    ("spacetime publish -s local db", "publish"), ("/stdb/spacetime call -s local db add 1", "call"),
    ("/stdb/spacetime --root-dir=/stdb sql -s local db \"INSERT INTO t VALUES (1)\"", "SELECT"),
    ("spacetime sql db 'SELECT 1; DELETE FROM t'", "SELECT"), ("spacetime delete db", "delete"),
    ("certbot renew", "renew"), ("certbot renew --dry-run", "renew"), ("certbot", "obtains"),
    ("touch /tmp/x", "touch"), ("python3 -c 'print(1)'", "python3"), ("sudo tee /x", "tee"),
    ("sudo -u spacetimedb rm /x", "rm"), ("sudo -s", "sudo"),
    ("sudo systemctl restart nginx", "restart"), ("script -qec 'certbot renew --dry-run' /dev/null", "script"),
    ("ls; rm x", "rm"), ("ls && rm x", "rm"), ("ls || rm x", "rm"), ("ls | rm x", "rm"), ("ls & rm x", "rm"),
    ("echo $(rm x)", "rm"), ("echo \"$(rm x)\"", "rm"), ("echo `rm x`", "rm"), ("x=$(rm y)", "rm"),
    ("echo ${x:-$(rm y)}", "rm"), ("cat <(rm x)", "rm"), ("cat >(rm x)", "rm"), ("echo $(( $(rm x) + 1 ))", "rm"),
    ("for i in 1; do rm $i; done", "rm"), ("for i in $(rm x); do :; done", "rm"), ("case a in a) rm x;; esac", "rm"),
    ("case $(rm x) in a) :;; esac", "rm"), ("if true; then reboot; fi", "reboot"), ("while rm x; do :; done", "rm"),
    ("(rm x)", "rm"), ("{ rm x; }", "rm"), ("! rm x", "rm"), ("time rm x", "rm"),
    ("cat <<EOF\nx\nEOF", "here-documents"), ("$cmd /etc", "computed"), ("\"$cmd\" x", "computed"),
    ("eval ls", "eval"), ("exec rm x", "exec"), ("command rm x", "command -v"), ("nohup rm x", "nohup"),
    ("sh -c ls", "sh"), ("bash -c ls", "bash"), ("/tmp/cat /etc/x", "allow-list"), ("./x", "allow-list"),
    ("awk '{system(\"rm x\")}' f", "system"), ("awk '{print > \"/tmp/x\"}' f", "print"),
    ("awk '{print | \"sh\"}' f", "|"), ("awk -f prog.awk f", "-f"), ("sort -o /tmp/x f", "sort -o"),
    ("sort --out=/tmp/x f", "sort -o"), ("sort --compress-program=sh f", "compress"), ("uniq a b", "output"),
    ("find / -delete", "-delete"), ("find / -exec rm {} \\;", "-exec"), ("find / -fprint /tmp/x", "-fprint"),
    ("xargs rm", "xargs"), ("xargs -0 sed -i s/a/b/", "xargs"), ("env rm x", "rm"), ("env -S 'rm x'", "env -S"),
    ("timeout 5 rm x", "rm"), ("timeout -k 1 5 systemctl restart x", "restart"),
    ("ip link set eth0 down", "set"), ("ip addr add 10.0.0.1/24 dev eth0", "add"), ("ip -batch f", "batch"),
    ("iptables -F", "-F"), ("iptables -A INPUT -j DROP", "-A"), ("iptables -L -Z", "-Z"),
    ("nft flush ruleset", "flush"), ("nft -f rules.nft", "-f"), ("ufw enable", "enable"), ("ufw allow 22", "allow"),
    ("ufw --dry-run allow 1", "dry-run"),
    ("mount /dev/nvme1n1 /stdb", "mount"), ("mount -o remount,ro /", "mount"), ("date -s '2020-01-01'", "clock"),
    ("date 010100002020", "clock"), ("date -Rs@0", "clock"), ("hostname foo", "host name"),
    ("journalctl --vacuum-time=1s", "journal"), ("journalctl -b --rotate", "journal"), ("journalctl --flu", "journal"),
    ("systemd-analyze set-log-level debug", "set-log-level"), ("systemd-analyze log-level debug", "log-level"),
    ("nginx -s reload", "-s"), ("nginx", "server"), ("nginx -g 'daemon off;'", "-g"),
    ("openssl x509 -in a -out b", "-out"), ("openssl req -new -key k", "req"), ("openssl genrsa", "genrsa"),
    ("dpkg -i x.deb", "dpkg -i"), ("dpkg --purge nginx", "--purge"), ("apt-cache gencaches", "gencaches"),
    ("apt-get install -y nginx", "apt-get"), ("ss -K dst 1.2.3.4", "-K"), ("PATH=/tmp:$PATH ls", "PATH"),
    ("LD_PRELOAD=/x.so ls", "LD_PRELOAD"), ("export PATH=/tmp", "PATH"), ("env PATH=/tmp ls", "PATH"),
    ("x='$(rm y)'; echo $((x))", "shell code"), ("printf -v x %s 1", "printf -v"), ("[ -v 'a[$(rm x)]' ]", "-v"),
    ("read 'a[$(rm x)]'", "read"), ("echo ${!x}", "indirect"), ("echo ${x@P}", "transformations"),
    ("echo ${a[$(rm x)]}", "subscripts"), ("echo $((a[1]))", "inside $(( ))"), ("[[ -f x ]]", "[["),
    ("((x++))", "arithmetic"), ("f() { rm x; }", "unexpected"), ("function f { :; }", "function"),
    ("a=(1 2)", "unexpected"), ("echo 'unterminated", "unterminated"), ("echo \"unterminated", "unterminated"),
    ("echo $(ls", "unterminated"), ("echo `ls", "unterminated"), ("source /tmp/x.sh", "shell code of a file"),
    (". ./x", "shell code of a file"), ("chown a b", "chown"), ("chmod 777 /stdb", "chmod"),
    ("dd if=/dev/zero of=x", "dd"),
    ("mkdir /x", "mkdir"), ("cp a b", "cp"), ("mv a b", "mv"), ("ln -s a b", "ln"), ("reboot", "reboot"),
    ("shutdown -r now", "shutdown"), ("nc -z 10.0.0.1 22", "nc"), ("cat /etc/x | sh", "sh"),
    ("if true; then", "expected"), ("sysctl -w net.ipv4.ip_forward=1", "sysctl"), ("sysctl vm.swappiness=1", "sysctl"),
    ("sysctl --system", "sysctl"),
    ("ls ;; ls", "unexpected"), ("select x in a; do :; done", "select"), ("coproc ls", "coproc"),
    ("systemctl -H h restart x", "restart"), ("sed -f script.sed f", "-f"),
]


@pytest.mark.parametrize("command", READS)
def test_the_kits_probes_pass(command: str) -> None:
    assert refusal(command) is None


def test_the_reboot_scenarios_probes_pass() -> None:
    from harness.scenarios.reboot import PROBES

    refused = {name: refusal(command) for name, command in PROBES.items() if refusal(command)}
    assert not refused


def test_the_state_digest_passes() -> None:
    assert refusal(digest_script()) is None


@pytest.mark.parametrize(("command", "why"), MUTATIONS)
def test_mutations_are_refused(command: str, why: str) -> None:
    reason = refusal(command)
    assert reason is not None, f"not refused: {command!r}"
    assert why in reason, reason
    assert "\n" not in reason


def test_quoting_decides_what_is_literal() -> None:
    assert refusal("echo 'rm -rf /; touch x' \"; rm x\" \\; rm") is None  # all arguments of echo
    assert refusal("grep -e '$(rm x)' /etc/fstab") is None  # single-quoted: not a substitution
    assert refusal("grep \"\\$(rm x)\" f") is None  # escaped in double quotes
    assert refusal("echo \\`rm x\\`") is None
    assert refusal("echo \"`rm x`\"") is not None
    assert refusal("'rm' x") is not None  # quotes do not hide the program
    assert refusal("r\\m x") is not None
    assert refusal("'if' true") is not None  # a quoted keyword is a (unknown) program


def test_redirections_only_to_dev_null_or_descriptors() -> None:
    for ok in ("ls 2>&1", "ls >/dev/null 2>&1", "ls 2>/dev/null", "ls &>/dev/null", "ls 1>&2", "ls 3>&-",
               "cat < /etc/fstab", "grep x <<< 'text'", "ls > /dev/stderr"):
        assert refusal(ok) is None, ok
    for bad in ("ls > out", "ls >out.txt 2>&1", "ls 2>>/var/log/x", "ls >& /tmp/x", "ls > /dev/null2",
                "ls > $f", "ls > /dev/nul?"):
        assert refusal(bad) is not None, bad


def test_computed_arguments_of_programs_with_write_flags_are_refused() -> None:
    assert refusal("sed $opts s/a/b/ f") is not None  # $opts could be -i
    assert refusal("sed \"$opt\" f") is not None
    assert refusal("find /stdb $pred") is not None
    assert refusal("curl \"$url\"") is not None
    assert refusal("find /stdb -newermt \"@$(date +%s)\"") is None  # fixed start: cannot become an option
    assert refusal("cat $f ${g} \"$h\"") is None  # cat reads whatever it is given


def test_the_parser_sees_every_command() -> None:
    parsed = parse("a | b && { c; (d); } || e $(f `g`) <(h); for i in $(j); do k; done; case x in y) l;; esac")
    names = sorted(c.words[0].text for c in parsed.commands if c.words)
    assert names == sorted("abcdefghjkl")  # i is the loop variable


def test_environment_variables_are_checked_like_assignments() -> None:
    assert env_refusal({"LC_ALL": "C", "STDB_X": "1"}) is None
    assert env_refusal({"PATH": "/tmp"}) is not None
    assert env_refusal({"LD_PRELOAD": "/x.so"}) is not None


def test_mutation_refused_is_one_line_naming_command_and_flag() -> None:
    error = MutationRefused("systemctl restart\nnginx", "`systemctl restart` is not read-only", host="db1")
    assert isinstance(error, KitError)
    line = error.one_line()
    assert "\n" not in line and "systemctl restart nginx" in line and "--allow-mutation" in line and "db1" in line


def test_the_guard_never_crashes_and_fails_closed() -> None:
    """Random shell-ish text: refusal() always answers (a reason or None), never raises."""
    alphabet = list("abc rm-x;&|()<>$`'\"\\{}[]*?!#=\n\t0123") + ["$(", "$((", "${", "<<", ">>", "&&", "||", ";;",
                                                                 "case ", " in ", " esac", "for ", " do ", " done"]
    rng = random.Random(20240617)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        answer = refusal(text)
        assert answer is None or isinstance(answer, str)
        if answer is None:
            assert "rm" not in text.split() or text.split()[0] != "rm"


def test_deep_nesting_is_refused_not_a_crash() -> None:
    assert refusal("echo " + "$(" * 200 + "ls" + ")" * 200) is not None


SECRET_READS = [
    "cat /etc/shadow", "sudo -n cat /etc/shadow", "getent shadow", "getent gshadow root", "head -1 /etc/gshadow",
    "grep root /etc/shadow", "cat /etc/letsencrypt/live/stdb.example.com/privkey.pem",
    "openssl pkey -in /etc/letsencrypt/archive/stdb.example.com/privkey1.pem -noout -text",
    "cat /stdb/config/id_ecdsa", "base64 /home/ubuntu/.ssh/id_ed25519", "cat /etc/ssh/ssh_host_ed25519_key",
    "cat /home/spacetimedb/.config/spacetime/cli.toml", "cat /root/.aws/credentials", "strings /proc/1/environ",
    "cat /etc/ssl/private/server.key", "tar -cf - /etc/letsencrypt/accounts", "ls /home/spacetimedb/.spacetime/",
]
PUBLIC_READS = ["cat /stdb/config/id_ecdsa.pub", "cat /etc/ssh/ssh_host_ed25519_key.pub",
                "openssl x509 -in /etc/letsencrypt/live/stdb.example.com/fullchain.pem -noout -dates",
                "ls -la /etc/letsencrypt/live/stdb.example.com"]


@pytest.mark.parametrize("command", SECRET_READS)
def test_a_secret_is_never_read(command: str) -> None:
    reason = refusal(command)
    assert reason and "names a secret" in reason, (command, reason)


@pytest.mark.parametrize("command", PUBLIC_READS)
def test_public_halves_and_certificates_stay_readable(command: str) -> None:
    assert refusal(command) is None, command
