"""Unit tests of the tunnel building blocks: gob framing, ACLs, remote specs, the scheduler."""

from __future__ import annotations

import asyncio

import pytest

from rportd.timers import Scheduler
from rportd.tunnels.acl import ACLError, TunnelACL
from rportd.tunnels.errors import TunnelError
from rportd.tunnels.gob import (
    GobDecoder,
    GobEncoder,
    GobError,
    UDPAddr,
    UDPMessage,
    encode_int,
    encode_uint,
)
from rportd.tunnels.request import auto_close_ns, idle_timeout_minutes, parse_remote_spec

# protocol.md Appendix A: what Go emits for {127.0.0.1:12345 "hi"} then {10.1.2.3:53 "hello"}.
DEFS = (
    "2bff810301010a5544504d65737361676501ff8200010201044164647201ff8400010444617461010a000000"
    "2eff83030101075544504164647201ff8400010301024950010a000104506f727401040001045a6f6e65010c000000"
)
MSG1 = "13ff820101047f00000101fe6072000102686900"
MSG2 = "14ff820101040a010203016a00010568656c6c6f00"
HI = UDPMessage(UDPAddr(bytes([127, 0, 0, 1]), 12345), b"hi")
HELLO = UDPMessage(UDPAddr(bytes([10, 1, 2, 3]), 53), b"hello")


def test_gob_encoder_emits_go_bytes() -> None:
    encoder = GobEncoder()
    assert (encoder.encode(HI) + encoder.encode(HELLO)).hex() == DEFS + MSG1 + MSG2
    assert encode_uint(24690) == bytes.fromhex("fe6072")
    assert encode_int(-1) == b"\x01"


def test_gob_decoder_reads_go_stream_in_any_chunking() -> None:
    stream = bytes.fromhex(DEFS + MSG1 + MSG2)
    for size in (1, 2, 7, len(stream)):
        decoder = GobDecoder()
        got: list[UDPMessage] = []
        for i in range(0, len(stream), size):
            got += decoder.feed(stream[i : i + size])
        assert got == [HI, HELLO]


def test_gob_decoder_keeps_16_byte_ips_and_empty_data() -> None:
    ip16 = bytes.fromhex("00000000000000000000ffffc0a8000a")
    message = UDPMessage(UDPAddr(ip16, 5353, "eth0"), b"")
    encoded = GobEncoder().encode(message)
    assert GobDecoder().feed(encoded) == [message]


def _message(type_id: int, body: bytes) -> bytes:
    raw = encode_int(type_id) + body
    return encode_uint(len(raw)) + raw


def _string(text: str) -> bytes:
    return encode_uint(len(text)) + text.encode()


def _struct_def(name: str, type_id: int, fields: list[tuple[str, int]]) -> bytes:
    common = b"\x01" + _string(name) + b"\x01" + encode_int(type_id) + b"\x00"
    listed = encode_uint(len(fields)) + b"".join(
        b"\x01" + _string(n) + b"\x01" + encode_int(t) + b"\x00" for n, t in fields
    )
    return b"\x03\x01" + common + b"\x01" + listed + b"\x00\x00"


def test_gob_decoder_learns_type_ids_and_matches_fields_by_name() -> None:
    # A sender numbering its types 70/71, with fields in another order.
    stream = _message(-71, _struct_def("UDPAddr", 71, [("Zone", 6), ("Port", 2), ("IP", 5)]))
    stream += _message(-70, _struct_def("UDPMessage", 70, [("Data", 5), ("Addr", 71)]))
    addr = b"\x02" + encode_int(7) + b"\x01" + encode_uint(4) + b"\x01\x02\x03\x04" + b"\x00"
    stream += _message(70, b"\x01" + _string("xyz") + b"\x01" + addr + b"\x00")
    assert GobDecoder().feed(stream) == [UDPMessage(UDPAddr(b"\x01\x02\x03\x04", 7), b"xyz")]


def test_gob_decoder_refuses_garbage() -> None:
    with pytest.raises(GobError):
        GobDecoder().feed(bytes.fromhex("05ff82090909"))
    with pytest.raises(GobError):
        GobDecoder().feed(b"\xfc\x7f\xff\xff\xff")  # a 2 GiB message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("22", ("", "", "127.0.0.1", "22", "tcp")),
        ("example.com:80", ("", "", "example.com", "80", "tcp")),
        ("3000:22", ("0.0.0.0", "3000", "127.0.0.1", "22", "tcp")),
        ("127.0.0.1:3000:10.0.0.1:22", ("127.0.0.1", "3000", "10.0.0.1", "22", "tcp")),
        ("53/udp", ("", "", "127.0.0.1", "53", "udp")),
        ("3000:22/tcp+udp", ("0.0.0.0", "3000", "127.0.0.1", "22", "tcp+udp")),
        (":3000:22", ("0.0.0.0", "3000", "127.0.0.1", "22", "tcp")),
    ],
)
def test_remote_spec_like_upstream(spec: str, expected: tuple[str, ...]) -> None:
    r = parse_remote_spec(spec)
    assert (r.lhost, r.lport, r.rhost, r.rport, r.protocol) == expected


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("a:b:c:d:e", "Invalid remote"),
        ("host", "Missing ports"),
        ("22/sctp", "Missing ports"),
        ("bad\x01host:22", "Invalid host"),
        ("bad%zzhost:22", "Invalid host"),
    ],
)
def test_remote_spec_errors(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_remote_spec(spec)


def test_acl_matches_ips_and_networks() -> None:
    acl = TunnelACL.parse("10.0.0.1,192.168.0.0/16,2001:db8::/32")
    assert acl is not None
    assert acl.allows("10.0.0.1") and not acl.allows("10.0.0.2")
    assert acl.allows("192.168.7.9") and acl.allows("::ffff:192.168.1.1")
    assert acl.allows("2001:db8::5") and not acl.allows("2001:db9::5")
    assert TunnelACL.parse("") is None and TunnelACL.parse(None) is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("0.0.0.0", "0.0.0.0 would allow access to everyone. If that's what you want, do not"),
        ("0.0.0.0/0", "0.0.0.0 would allow access to everyone"),
        ("::", ":: would allow access to everyone"),
        ("10.0.0.1, 10.0.0.2", "invalid IP addr:  10.0.0.2"),
        ("10.0.0.0/33", "invalid CIDR address: 10.0.0.0/33"),
        ("nope", "invalid IP addr: nope"),
    ],
)
def test_acl_errors_in_upstream_words(text: str, error: str) -> None:
    with pytest.raises(ACLError) as info:
        TunnelACL.parse(text)
    assert str(info.value).startswith(error)


def test_idle_timeout_and_auto_close_values() -> None:
    assert idle_timeout_minutes("", "") == 5
    assert idle_timeout_minutes("", "true") == 0
    assert idle_timeout_minutes("10080", "nonsense") == 10080
    assert auto_close_ns("") == 0
    assert auto_close_ns("1h30m") == 5400 * 10**9
    assert auto_close_ns("744h") == 744 * 3600 * 10**9
    for bad, title in [
        (("10081", ""), "idle timeoout param should be in range [0,604800000000000]"),
        (("x", ""), "invalid idle timeout param"),
        (("5", "1"), "conflicting parameters idle timeout 5 and skip idle timeout 5, either"),
    ]:
        with pytest.raises(TunnelError) as info:
            idle_timeout_minutes(*bad)
        assert info.value.title.startswith(title) and info.value.status == 400
    for raw, title in [
        ("745h", "tunnel auto-close value should not be more than 744h0m0s"),
        ("-1s", "tunnel auto-close value should be more than 0"),
        ("soon", "invalid tunnel auto-close format"),
    ]:
        with pytest.raises(TunnelError) as info:
            auto_close_ns(raw)
        assert info.value.title == title


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_scheduler_runs_due_timers_in_order_and_skips_cancelled() -> None:
    clock = FakeClock()
    scheduler = Scheduler(clock)
    scheduler.start()
    ran: list[str] = []
    scheduler.call_later(30, lambda: ran.append("b"))
    scheduler.call_later(10, lambda: ran.append("a"))
    scheduler.call_later(20, lambda: ran.append("never")).cancel()
    scheduler.call_later(99, lambda: ran.append("late"))
    clock.now += 35
    scheduler.wake()
    for _ in range(20):
        await asyncio.sleep(0)
    assert ran == ["a", "b"]
    assert len(scheduler) == 1
    await scheduler.stop()


async def test_scheduler_sleeps_until_the_earliest_deadline() -> None:
    scheduler = Scheduler()
    scheduler.start()
    fired = asyncio.Event()
    scheduler.call_later(3600, lambda: None)
    scheduler.call_later(0.05, fired.set)  # earlier than the one it was sleeping for
    await asyncio.wait_for(fired.wait(), 2)
    await scheduler.stop()


def test_scheduler_compacts_cancelled_timers() -> None:
    scheduler = Scheduler(FakeClock())
    timers = [scheduler.call_later(3600 + i, lambda: None) for i in range(200)]
    for timer in timers[:150]:
        timer.cancel()
    assert len(scheduler) == 50
    assert len(scheduler._heap) < 200
