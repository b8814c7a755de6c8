"""Closing a listening socket without resetting the connections queued on it.

When a listening socket closes, the kernel resets every connection in its accept
queue, and a load balancer does not retry a POST after a reset. A connection that
arrives between the last accept and the close is in that queue. So a server that
stops first tells the kernel to stop taking new connections on the socket, then
accepts what is already queued, and only then closes it:

- a classic BPF filter on the socket drops every new SYN (a pure SYN, without
  ACK); the client retransmits it after a second, finds the socket closed and is
  refused, which a balancer retries. The ACK that completes a handshake already
  under way still passes, so that connection joins the queue and is served.
- ``TCP_INFO`` on a listening socket reports its accept queue's length; the
  server keeps accepting until it is empty.

Linux only; elsewhere, or if the filter is refused, ``stop_new_connections``
says so and the socket closes as before.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import sys
from typing import Protocol

# <linux/filter.h>
_SO_ATTACH_FILTER = 26
_BPF_LD_B_ABS = 0x30  # BPF_LD | BPF_B | BPF_ABS
_BPF_AND_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_BPF_RET_K = 0x06  # BPF_RET | BPF_K
_TCP_FLAGS_OFFSET = 13  # the filter sees the packet from its TCP header on
_SYN, _ACK = 0x02, 0x10
# struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked;
# for a listening socket ``unacked`` is the accept queue's length.
_TCPI_UNACKED_OFFSET = 24


class _Socket(Protocol):
    def setsockopt(self, level: int, option: int, value: bytes, /) -> None: ...
    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes: ...


class _Insn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Insn))]


# Drop a packet whose SYN is set and ACK is not; pass everything else.
_DROP_NEW_SYNS = (_Insn * 5)(
    _Insn(_BPF_LD_B_ABS, 0, 0, _TCP_FLAGS_OFFSET),
    _Insn(_BPF_AND_K, 0, 0, _SYN | _ACK),
    _Insn(_BPF_JEQ_K, 0, 1, _SYN),
    _Insn(_BPF_RET_K, 0, 0, 0),
    _Insn(_BPF_RET_K, 0, 0, 0xFFFFFFFF),
)


def stop_new_connections(sock: _Socket) -> str | None:
    """New connections to ``sock`` are no longer taken; None, or why that failed."""
    if sys.platform != "linux":
        return f"not supported on {sys.platform}"
    program = _Program(len(_DROP_NEW_SYNS), _DROP_NEW_SYNS)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(program))
    except OSError as exc:
        return f"filter refused: {exc}"
    return None


def queued(sock: _Socket) -> int:
    """Connections waiting in ``sock``'s accept queue (0 where that cannot be read)."""
    if sys.platform != "linux":
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except OSError:
        return 0
    if len(info) < _TCPI_UNACKED_OFFSET + 4:
        return 0
    (count,) = struct.unpack_from("I", info, _TCPI_UNACKED_OFFSET)
    return int(count)
