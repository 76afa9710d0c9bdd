"""The real network of a cluster run: one Linux network namespace per region,
a veth pair to one bridge, and nftables rules that cut links in the kernel.

Why this module exists: a partition of the real replication service must drop
packets, not pause a thread. Each region's processes (its ``flk serve``, its
object store and that store's copier) run inside the region's namespace
``<prefix>-<region>``; the namespace's ``eth0`` is one end of a veth pair whose
other end is enslaved to the bridge ``<prefix>br`` in the runner's namespace,
which holds the clients (the runner's agents) at the bridge's address.

A partition between node sets ``a`` and ``b`` (region ids and ``clients``) adds,
for every directed pair (src, dst) it cuts, one rule with a counter to the
``inet flk`` table of the namespace the packets enter (``input`` of dst's
namespace) or, towards the clients, leave (``output`` of src's namespace):
symmetric cuts drop every packet between the two addresses; a one-way cut
(``symmetric = false``: only what ``a`` sends to ``b``) drops what src sends to
dst's listening ports, so connections dst opens to src still work. Healing
deletes the rules by handle after reading their counters; the dropped-packet
count is what the run reports.

Addresses come from one /24 chosen by the prefix (``10.<n>.<m>.0/24``, inside
namespaces this run made; nothing is routed out). Everything made is listed in a
ledger file -- namespaces, links, the tmpfs mounts of the regions' WAL disks, the
processes started outside the namespaces (the router, Prometheus: pid with its start
time, so a reused pid is never hit) and the run's work dir -- so :func:`cleanup_ledger`
removes what a runner killed with SIGKILL left.
Needs root (``CAP_NET_ADMIN``), ``ip`` (iproute2) and ``nft`` (nftables).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from ...core import textdata

TABLE = "flk"


class NetworkError(Exception):
    """A namespace, link or rule could not be made (the message names the command)."""


def run(cmd: list[str], check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise NetworkError(f"{' '.join(cmd)}: {(proc.stderr or proc.stdout).strip()[:300]}")
    return proc


def missing_tools() -> list[str]:
    """What the kernel-level network needs and this machine lacks (empty: all there)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (network namespaces need CAP_NET_ADMIN)")
    for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            out.append(f"{tool} (Debian package {pkg}; `make setup` installs it)")
    return out


def subnet_for(prefix: str) -> tuple[int, int]:
    h = hashlib.sha256(prefix.encode()).digest()
    return 200 + h[0] % 50, 1 + h[1] % 250


@dataclass
class Rule:
    ns: str
    chain: str
    handle: int
    text: str
    fault: int


@dataclass
class Network:
    prefix: str
    regions: list[str]
    ledger: str
    ports: tuple[int, ...] = ()
    rules: list[Rule] = field(default_factory=list)
    made: dict = field(default_factory=lambda: {"namespaces": [], "links": [], "pids": [], "mounts": [],
                                                "pid": os.getpid()})

    def __post_init__(self) -> None:
        a, b = subnet_for(self.prefix)
        self.base = f"10.{a}.{b}"
        self.bridge = f"{self.prefix}br"[:15]

    # -- names and addresses -----------------------------------------------------------------
    def ns(self, region: str) -> str:
        return f"{self.prefix}-{region}"

    @property
    def client_ip(self) -> str:
        return f"{self.base}.1"

    def ip(self, node: str) -> str:
        if node == "clients":
            return self.client_ip
        return f"{self.base}.{10 + self.regions.index(node)}"

    def exec_prefix(self, region: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(region)]

    # -- lifecycle -----------------------------------------------------------------------------
    def _save(self) -> None:
        with open(self.ledger, "w", encoding="utf-8") as f:
            json.dump(self.made, f)

    def adopt(self, pid: int) -> None:
        """List a process started outside the namespaces (a session leader) for the cleanup."""
        self.made.setdefault("pids", []).append([pid, starttime(pid)])
        self._save()

    def adopt_mount(self, path: str) -> None:
        self.made.setdefault("mounts", []).append(path)
        self._save()

    def adopt_dir(self, path: str) -> None:
        """List the run's work dir (its regions' data and logs): a killed run's cleanup removes
        it (:func:`cleanup_ledger`); a run that ends itself removes it after writing its artifacts."""
        self.made.setdefault("dirs", []).append(path)
        self._save()

    def up(self) -> None:
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self.made["links"].append(self.bridge)
        self._save()
        run(["ip", "addr", "add", f"{self.client_ip}/24", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        for i, region in enumerate(self.regions):
            ns, veth = self.ns(region), f"{self.prefix}v{i}"[:15]
            run(["ip", "netns", "add", ns])
            self.made["namespaces"].append(ns)
            self._save()
            run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
            self.made["links"].append(veth)
            self._save()
            run(["ip", "link", "set", veth, "master", self.bridge, "up"])
            inside = self.exec_prefix(region)
            run([*inside, "ip", "addr", "add", f"{self.ip(region)}/24", "dev", "eth0"])
            run([*inside, "ip", "link", "set", "eth0", "up"])
            run([*inside, "ip", "link", "set", "lo", "up"])
            run([*inside, "nft", f"add table inet {TABLE}; "
                 f"add chain inet {TABLE} input {{ type filter hook input priority 0; policy accept; }}; "
                 f"add chain inet {TABLE} output {{ type filter hook output priority 0; policy accept; }}"])

    def down(self) -> list[str]:
        """Remove every namespace and link this network made; returns what could not be removed."""
        left = cleanup(self.made)
        if not left:
            try:
                os.remove(self.ledger)
            except OSError:
                pass
        return left

    # -- partitions ----------------------------------------------------------------------------
    def cut(self, fault: int, a: list[str], b: list[str], symmetric: bool) -> list[Rule]:
        pairs = [(s, d) for s in a for d in b]
        if symmetric:
            pairs += [(d, s) for s in a for d in b]
        made = []
        for src, dst in pairs:
            if src == "clients" and dst == "clients":
                continue
            match = f"ip saddr {self.ip(src)} ip daddr {self.ip(dst)}"
            if not symmetric and dst != "clients" and self.ports:
                ports = ", ".join(str(p) for p in self.ports)
                match += f" tcp dport {{ {ports} }}"
            if dst != "clients":
                ns, chain = self.ns(dst), "input"
            else:
                ns, chain = self.ns(src), "output"
            made.append(self._add_rule(fault, ns, chain, f"{match} counter drop comment \"fault {fault}: {src} -/-> "
                                                         f"{dst}\""))
        return made

    def reject_port(self, fault: int, region: str, port: int) -> Rule:
        """Inside ``region``'s namespace, every packet to TCP ``port`` is answered with a reset: a
        connect is refused and an open connection is reset at its next packet (a store whose host
        refuses connections); :meth:`heal` of the fault removes it."""
        return self._add_rule(fault, self.ns(region), "output",
                              f"tcp dport {port} counter reject with tcp reset comment \"fault {fault}: {region} "
                              f"port {port} refused\"")

    def silence(self, fault: int, region: str, port: int) -> list[Rule]:
        """Inside ``region``'s namespace, every packet to and from TCP ``port`` is dropped: its
        host is silent (a dead machine: a connect and every open connection wait their timeouts;
        the resets of a killed process never leave); :meth:`heal` of the fault removes them."""
        return [self._add_rule(fault, self.ns(region), "input",
                               f"tcp dport {port} counter drop comment \"fault {fault}: {region} silent\""),
                self._add_rule(fault, self.ns(region), "output",
                               f"tcp sport {port} counter drop comment \"fault {fault}: {region} silent\"")]

    def _add_rule(self, fault: int, ns: str, chain: str, text: str) -> Rule:
        out = run(["ip", "netns", "exec", ns, "nft", "--echo", "--handle",
                   f"add rule inet {TABLE} {chain} {text}"]).stdout
        m = re.search(r"# handle (\d+)", out)
        if m is None:
            raise NetworkError(f"nft gave no handle for the rule in {ns}: {out.strip()[:200]}")
        rule = Rule(ns, chain, int(m.group(1)), text, fault)
        self.rules.append(rule)
        return rule

    def counters(self, fault: int) -> list[dict]:
        """The live rules of a fault with their packet and byte counters."""
        out = []
        for ns in sorted({r.ns for r in self.rules if r.fault == fault}):
            doc = textdata.json_loads(run(["ip", "netns", "exec", ns, "nft", "-j", "-a", "list", "table", "inet",
                                  TABLE]).stdout)
            for item in doc.get("nftables", []):
                rule = item.get("rule")
                if not rule:
                    continue
                mine = [r for r in self.rules if r.ns == ns and r.handle == rule.get("handle") and r.fault == fault]
                if not mine:
                    continue
                counter = next((e["counter"] for e in rule.get("expr", []) if "counter" in e), {})
                out.append({"namespace": ns, "chain": mine[0].chain, "handle": mine[0].handle,
                            "rule": mine[0].text, "packets": int(counter.get("packets", 0)),
                            "bytes": int(counter.get("bytes", 0))})
        return out

    def listing(self, fault: int) -> str:
        """``nft list table`` of every namespace holding a rule of this fault (with counters)."""
        parts = []
        for ns in sorted({r.ns for r in self.rules if r.fault == fault}):
            text = run(["ip", "netns", "exec", ns, "nft", "-a", "list", "table", "inet", TABLE]).stdout
            parts.append(f"# ip netns exec {ns} nft -a list table inet {TABLE}\n{text}")
        return "\n".join(parts)

    def heal(self, fault: int) -> list[dict]:
        counts = self.counters(fault)
        for r in [r for r in self.rules if r.fault == fault]:
            run(["ip", "netns", "exec", r.ns, "nft", "delete", "rule", "inet", TABLE, r.chain, "handle",
                 str(r.handle)], check=False)
            self.rules.remove(r)
        return counts


def starttime(pid: int) -> int | None:
    """The start time of a process (clock ticks since boot; None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def cleanup(made: dict) -> list[str]:
    """Kill the processes listed (their process groups, when the pid is still the one started),
    delete the namespaces (their rules and veth ends go with them) and the links, unmount the mounts."""
    left = []
    for pid, started in made.get("pids", []):
        if started is not None and starttime(pid) == started:
            try:
                os.killpg(pid, 9)
            except OSError:
                pass
    for ns in made.get("namespaces", []):
        if run(["ip", "netns", "pids", ns], check=False).returncode != 0:
            continue  # already gone
        for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
            try:
                os.kill(int(pid), 9)
            except (OSError, ValueError):
                pass
        if run(["ip", "netns", "del", ns], check=False).returncode != 0:
            left.append(f"namespace {ns}")
    for link in made.get("links", []):
        if not _link_removed(link):
            left.append(f"link {link}")
    with open("/proc/mounts", encoding="utf-8") as f:
        mounted = {line.split()[1] for line in f}
    for path in made.get("mounts", []):
        if path in mounted and run(["umount", path], check=False).returncode != 0 and \
                run(["umount", "-l", path], check=False).returncode != 0:
            left.append(f"mount {path}")
    return left


def _link_removed(link: str, tries: int = 20) -> bool:
    """Delete ``link`` unless it is gone; True once it is gone. A veth whose peer sat in a
    namespace just deleted is destroyed by the kernel asynchronously: ``ip link del`` can then
    fail on a link that is already on its way out, so a failed delete is judged by whether
    the link is still there, looking again for up to about a second."""
    for attempt in range(tries):
        if run(["ip", "link", "show", link], check=False).returncode != 0:
            return True
        if run(["ip", "link", "del", link], check=False).returncode == 0:
            return True
        time.sleep(0.05 * (attempt + 1) / tries)
    return run(["ip", "link", "show", link], check=False).returncode != 0


def alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def cleanup_ledger(path: str) -> list[str]:
    """Remove what the ledger file of an earlier (killed) run lists; a run still alive (its
    runner's pid) is never touched: it is returned as left behind."""
    try:
        with open(path, encoding="utf-8") as f:
            made = textdata.json_load(f)
    except (OSError, ValueError):
        return []
    if made.get("pid") not in (None, os.getpid()) and alive(made["pid"]):
        return [f"the run of process {made['pid']} (still running)"]
    left = cleanup(made)
    if not left:  # nothing runs in the work dirs and nothing is mounted there any more
        left = remove_dirs(made.get("dirs", []))
    if not left:
        os.remove(path)
    return left


WORK_DIR_PREFIX = "flk-cluster-"  # :func:`flk.impl.lab.cluster.runner.run`'s work dirs: the only ones removed


def remove_dirs(paths: list[str]) -> list[str]:
    """Remove a killed run's work dirs; a path that is not one (an absolute directory named
    ``flk-cluster-*``, not a symlink) is never touched and is returned as left behind."""
    left = []
    for path in paths:
        if not isinstance(path, str) or not os.path.isabs(path) or \
                not os.path.basename(os.path.normpath(path)).startswith(WORK_DIR_PREFIX) or os.path.islink(path):
            left.append(f"dir {path!r} (not a run's work dir: kept)")
            continue
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            left.append(f"dir {path}")
    return left
