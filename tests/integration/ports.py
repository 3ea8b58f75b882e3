"""Free ports on 127.0.0.1 for the servers the integration tests start (Ray heads, mlflow servers)."""
from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port():
    """One free port from the kernel's ephemeral range."""
    return free_ports(1)[0]


def free_ports(n):
    """`n` distinct free ports from the kernel's ephemeral range (all held open while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def worker_port_range(size=400):
    """A free (low, high) range for Ray's worker ports outside the kernel's ephemeral range, where
    `free_ports` picks the head's other ports, so that the two can never overlap."""
    try:
        eph_low, eph_high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        eph_low, eph_high = 32768, 60999
    starts = [p for p in range(10000, 65535 - size, 100) if p + size < eph_low or p > eph_high]
    for low in random.sample(starts, min(len(starts), 50)):
        if all(port_free(p) for p in range(low, low + size + 1)):
            return low, low + size
    raise RuntimeError(f"no free range of {size} ports outside the ephemeral range {eph_low}-{eph_high}")
