"""Unit tests of the client simulator's building blocks (no server needed)."""

from __future__ import annotations

import hashlib
import json
import random
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.simulator.client import backoff_delay
from tests.simulator.commands import SummaryBuffer, build_argv, command_allowed
from tests.simulator.config import (
    DEFAULT_ALLOW,
    DEFAULT_DENY,
    SimulatorConfig,
    normalize_server_url,
    parse_remote,
)
from tests.simulator.gob import GobDecoder, GobEncoder, UDPAddr, UDPMessage, encode_uint
from tests.simulator.gojson import GoDecodeError, go_dumps, go_time, go_unmarshal
from tests.simulator.ssh import md5_fingerprint
from tests.simulator.transport import OP_BINARY, OP_CONT, build_frame
from tests.simulator.tunnels import go_split_host_port, parse_tunnel_allowed, tunnel_is_allowed

# --------------------------------------------------------------------------- gob (Appendix A)

APPENDIX_A_DEFS = (
    "2bff810301010a5544504d65737361676501ff8200010201044164647201ff8400010444617461010a000000"
    "2eff83030101075544504164647201ff8400010301024950010a000104506f727401040001045a6f6e65010c000000"
)
APPENDIX_A_MSG1 = "13ff82010104" + "7f000001" + "01fe6072" + "00" + "01026869" + "00"
APPENDIX_A_MSG2 = "14ff82010104" + "0a010203" + "016a" + "00" + "010568656c6c6f" + "00"


def test_gob_uint_examples() -> None:
    assert encode_uint(24690) == bytes.fromhex("fe6072")
    assert encode_uint(5) == b"\x05"
    assert encode_uint(130) == bytes.fromhex("ff82")


def test_gob_encoder_matches_appendix_a() -> None:
    enc = GobEncoder()
    out = enc.encode(UDPMessage(UDPAddr(bytes([127, 0, 0, 1]), 12345), b"hi"))
    out += enc.encode(UDPMessage(UDPAddr(bytes([10, 1, 2, 3]), 53), b"hello"))
    assert out.hex() == APPENDIX_A_DEFS + APPENDIX_A_MSG1 + APPENDIX_A_MSG2


def test_gob_decoder_parses_appendix_a_bytewise() -> None:
    stream = bytes.fromhex(APPENDIX_A_DEFS + APPENDIX_A_MSG1 + APPENDIX_A_MSG2)
    dec = GobDecoder()
    got: list[UDPMessage] = []
    for i in range(len(stream)):  # worst case chunking
        got += dec.feed_messages(stream[i : i + 1])
    assert got == [
        UDPMessage(UDPAddr(bytes([127, 0, 0, 1]), 12345), b"hi"),
        UDPMessage(UDPAddr(bytes([10, 1, 2, 3]), 53), b"hello"),
    ]


def test_gob_decoder_ipv4_mapped_16_byte_ip_and_reencode() -> None:
    ip16 = bytes.fromhex("00000000000000000000ffffc0a8000a")
    body = "ff82" + "0101" + "10" + ip16.hex() + "01" + encode_uint(5353 << 1).hex() + "00"
    body += "0103" + b"abc".hex() + "00"
    msg = encode_uint(len(bytes.fromhex(body))).hex() + body
    dec = GobDecoder()
    (m,) = dec.feed_messages(bytes.fromhex(APPENDIX_A_DEFS + msg))
    assert m.addr == UDPAddr(ip16, 5353, "")
    assert m.data == b"abc"
    # echoing it produces the same value bytes (Addr byte for byte)
    again = GobEncoder().encode(UDPMessage(m.addr, m.data))
    assert again.hex() == APPENDIX_A_DEFS + msg


def test_gob_decoder_learns_other_type_ids_and_field_order() -> None:
    # a sender that numbers types 70/71 and defines UDPAddr with Zone first
    def s(b: bytes) -> bytes:
        return encode_uint(len(b)) + b

    def wt_struct(name: str, tid: int, fields: list[tuple[str, int]]) -> bytes:
        common = b"\x01" + s(name.encode()) + b"\x01" + _gob_int(tid) + b"\x00"
        fl = encode_uint(len(fields))
        for fname, ftid in fields:
            fl += b"\x01" + s(fname.encode()) + b"\x01" + _gob_int(ftid) + b"\x00"
        return b"\x03" + b"\x01" + common + b"\x01" + fl + b"\x00" + b"\x00"

    def message(tid: int, body: bytes) -> bytes:
        m = _gob_int(tid) + body
        return encode_uint(len(m)) + m

    stream = message(-71, wt_struct("UDPAddr", 71, [("Zone", 6), ("Port", 2), ("IP", 5)]))
    stream += message(-70, wt_struct("UDPMessage", 70, [("Data", 5), ("Addr", 71)]))
    value = b"\x01" + s(b"xyz") + b"\x01" + b"\x02" + _gob_int(7) + b"\x01" + s(b"\x01\x02\x03\x04")
    value += b"\x00\x00"
    stream += message(70, value)
    (m,) = GobDecoder().feed_messages(stream)
    assert m == UDPMessage(UDPAddr(b"\x01\x02\x03\x04", 7), b"xyz")


def _gob_int(i: int) -> bytes:
    return encode_uint((i << 1) if i >= 0 else (((~i) << 1) | 1))


# --------------------------------------------------------------------------- fingerprint (§3.3)

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _determ_bytes(seed: bytes, n: int) -> bytes:
    nxt = seed
    for _ in range(2048):
        nxt = hashlib.sha512(nxt).digest()[:32]
    out = b""
    while len(out) < n:
        h = hashlib.sha512(nxt).digest()
        nxt, out = h[:32], out + h[32:]
    return out[:n]


def _host_key_from_seed(seed: str) -> ec.EllipticCurvePrivateKey:
    d = int.from_bytes(_determ_bytes(seed.encode(), 40), "big") % (P256_N - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1())


def _ssh_blob(key: ec.EllipticCurvePrivateKey) -> bytes:
    def s(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    pt = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return s(b"ecdsa-sha2-nistp256") + s(b"nistp256") + s(pt)


@pytest.mark.parametrize(
    ("seed", "d_hex", "fp"),
    [
        (
            "Z4mQqmkDnexNNR4giNU3Me",
            "4195f5c61b825289a9aa9158b53923c456d94adce249ec5a99df979e0de4f78b",
            "5d:b3:ee:37:b2:31:cc:ce:93:d4:69:21:16:5d:36:11",
        ),
        (
            "my-secret-seed",
            "66c04e2f6ab4b2540ce777916b0f0886fcc3fab2f16f69cfdc847e84954812ee",
            "84:ce:1b:f0:55:88:76:05:e2:ac:f8:b2:64:eb:55:82",
        ),
    ],
)
def test_fingerprint_vectors(seed: str, d_hex: str, fp: str) -> None:
    key = _host_key_from_seed(seed)
    assert key.private_numbers().private_value == int(d_hex, 16)
    assert md5_fingerprint(_ssh_blob(key)) == fp


def test_fingerprint_via_asyncssh_blob() -> None:
    import asyncssh

    pem = _host_key_from_seed("Z4mQqmkDnexNNR4giNU3Me").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    key = asyncssh.import_private_key(pem)
    assert md5_fingerprint(key.public_data) == "5d:b3:ee:37:b2:31:cc:ce:93:d4:69:21:16:5d:36:11"


# --------------------------------------------------------------------------- remotes (§4.3)


@pytest.mark.parametrize(
    ("spec", "expect"),
    [
        ("3000", ("tcp", "", "", "127.0.0.1", "3000")),
        ("3000:127.0.0.1:22", ("tcp", "0.0.0.0", "3000", "127.0.0.1", "22")),
        ("0.0.0.0:3000:127.0.0.1:22", ("tcp", "0.0.0.0", "3000", "127.0.0.1", "22")),
        ("192.168.0.1:3000:google.com:80", ("tcp", "192.168.0.1", "3000", "google.com", "80")),
        ("3000:google.com:80", ("tcp", "0.0.0.0", "3000", "google.com", "80")),
        ("foobar.com:3000", ("tcp", "", "", "foobar.com", "3000")),
        ("53/udp", ("udp", "", "", "127.0.0.1", "53")),
        ("5000:10.0.0.1:53/udp", ("udp", "0.0.0.0", "5000", "10.0.0.1", "53")),
        ("22/tcp+udp", ("tcp+udp", "", "", "127.0.0.1", "22")),
    ],
)
def test_parse_remote(spec: str, expect: tuple[str, str, str, str, str]) -> None:
    r = parse_remote(spec)
    assert (r["protocol"], r["lhost"], r["lport"], r["rhost"], r["rport"]) == expect
    assert list(r) == [
        "name", "protocol", "lhost", "lport", "lport_random", "owner", "rhost", "rport",
        "scheme", "acl", "idle_timeout_minutes", "auto_close", "http_proxy", "host_header",
        "auth_user", "auth_password", "tunnel_url",
    ]  # fmt: skip
    assert r["scheme"] is None and r["acl"] is None and r["auto_close"] == 0


@pytest.mark.parametrize(("spec", "err"), [("a:b", "Missing ports"), ("1:2:3:4:5", "Invalid")])
def test_parse_remote_errors(spec: str, err: str) -> None:
    with pytest.raises(ValueError, match=err):
        parse_remote(spec)


# --------------------------------------------------------------------------- URLs (§2.1)


@pytest.mark.parametrize(
    ("url", "expect"),
    [
        ("host:8080", "ws://host:8080"),
        ("127.0.0.1:8080", "ws://127.0.0.1:8080"),
        ("http://host", "ws://host:80"),
        ("https://host", "wss://host:443"),
        ("https://host:8443/some/path?x=1", "wss://host:8443/some/path?x=1"),
        ("ws://host:1", "ws://host:1"),
        ("wss://host", "wss://host:443"),
        ("http://[::1]:9000", "ws://[::1]:9000"),
    ],
)
def test_normalize_server_url(url: str, expect: str) -> None:
    assert normalize_server_url(url) == expect


# --------------------------------------------------------------------------- commands (§7)


@pytest.mark.parametrize(
    ("cmd", "allowed"),
    [
        ("ls", False),
        ("/usr/bin/ls -la", True),
        ("/usr/local/bin/foo", True),
        ("/usr/bin/ls; rm -rf /", False),
        ("/usr/bin/echo a > b", False),
        ("/usr/bin/a && b", False),
        ("/usr/bin/a | b", False),
        ("/usr/bin/a,b", False),
        ("/usr/bin/a\nb", False),
        ("C:\\Windows\\System32\\ipconfig.exe", True),
        ("/bin/ls", False),
    ],
)
def test_command_rules_default(cmd: str, allowed: bool) -> None:
    assert command_allowed(cmd, DEFAULT_ALLOW, DEFAULT_DENY, ["allow", "deny"]) is allowed


def test_command_rules_order() -> None:
    allow, deny = ["^/usr/bin/.*"], ["rm"]
    assert not command_allowed("/usr/bin/rm", allow, deny, ["allow", "deny"])
    assert command_allowed("/usr/bin/rm", allow, deny, ["deny", "allow"])
    assert command_allowed("ls", allow, deny, ["deny", "allow"])  # no deny match
    assert not command_allowed("rm x", allow, deny, ["deny", "allow"])
    assert not command_allowed("/usr/bin/ls", allow, deny, ["bogus"])
    assert command_allowed("echo hi", [".*"], [], ["allow", "deny"])


def test_build_argv() -> None:
    assert build_argv("/d/s", interpreter="", aliases={}, is_sudo=False, has_shebang=False) == [
        "/bin/sh",
        "/d/s",
    ]
    assert build_argv("/d/s", interpreter="bash", aliases={}, is_sudo=True, has_shebang=False) == [
        "sudo",
        "-n",
        "bash",
        "/d/s",
    ]
    argv = build_argv("/d/s", interpreter="", aliases={}, is_sudo=False, has_shebang=True)
    assert argv == ["/d/s"]
    assert build_argv(
        "/d x/s", interpreter="py", aliases={"py": "/usr/bin/python3"}, is_sudo=False,
        has_shebang=False,
    ) == ["/usr/bin/python3", "/d\\ x/s"]  # fmt: skip


def test_summary_buffer() -> None:
    sb = SummaryBuffer()
    for part in [b"a <SUMMARY>one", b" two</summary> b\nx <summary>l1\nl2\n", b"l3</summary>y"]:
        sb.write(part)
    assert sb.finish() == b"one twol1\nl2\nl3"


# --------------------------------------------------------------------------- backoff (§9)


def test_backoff_bounds() -> None:
    random.seed(1)
    assert backoff_delay(0) == 5.0
    for n in range(1, 12):
        samples = [backoff_delay(n) for _ in range(400)]
        hi = min(5.0 * 2**n, 600.0)
        assert all(5.0 <= d <= hi for d in samples)
        if 5.0 * 2**n <= 600:
            assert max(samples) > 5.0 + 0.8 * (hi - 5.0)  # uniform, reaches the top
    assert sum(1 for _ in range(200) if backoff_delay(10) == 600.0) > 150  # mostly clamped
    assert backoff_delay(3, 0.1, 0.5) <= 0.5


# --------------------------------------------------------------------------- Go JSON


def test_go_dumps_escaping_and_order() -> None:
    out = go_dumps({"b": "<x>&", "a": [1, 2.5, 0.0, None, True], "c": {"k": "\u2028"}})
    assert out == b'{"b":"\\u003cx\\u003e\\u0026","a":[1,2.5,0,null,true],"c":{"k":"\\u2028"}}'


def test_go_time_format() -> None:
    assert go_time(1_700_000_000_123_000_000, utc=True) == "2023-11-14T22:13:20.123Z"
    assert go_time(1_700_000_000_000_000_000, utc=True) == "2023-11-14T22:13:20Z"
    assert go_time(1_700_000_000_000_000_001, utc=True).endswith(".000000001Z")


def test_go_unmarshal_job_errors() -> None:
    from tests.simulator.commands import JOB_SCHEMA

    raw = b'{"JID":"x","timeout_sec":5,"started_at":"2024-05-06T07:08:09Z"}'
    ok = go_unmarshal(raw, JOB_SCHEMA)
    assert ok["jid"] == "x" and ok["timeout_sec"] == 5 and ok["pid"] is None
    with pytest.raises(GoDecodeError, match=r"cannot unmarshal number 60\.0 into Go struct field "
                       r"Job\.timeout_sec of type int"):  # fmt: skip
        go_unmarshal(b'{"timeout_sec":60.0}', JOB_SCHEMA)
    with pytest.raises(GoDecodeError, match="parsing time"):
        go_unmarshal(b'{"started_at":"2024-05-06T07:08:09"}', JOB_SCHEMA)
    with pytest.raises(GoDecodeError, match="unexpected end of JSON input"):
        go_unmarshal(b"", JOB_SCHEMA)
    with pytest.raises(GoDecodeError, match="invalid character 'x' looking for beginning"):
        go_unmarshal(b"xyz", JOB_SCHEMA)


def test_connection_request_shape() -> None:
    from tests.simulator.client import RportClientSim

    sim = RportClientSim(
        SimulatorConfig(server="x:1", client_id="c1", remotes=["3000:127.0.0.1:22", "53/udp"])
    )
    req = json.loads(go_dumps(sim.connection_request()))
    assert list(req)[:3] == ["ID", "Name", "SessionID"]
    assert req["ID"] == "c1" and req["Name"] == "sim-host" and req["Version"] == "0.9.14"
    assert [r["protocol"] for r in req["Remotes"]] == ["tcp", "udp"]
    assert req["ClientConfiguration"]["client"]["auth"] == "client1:secret"
    assert req["Tags"] is None and req["Labels"] is None


# --------------------------------------------------------------------------- tunnel_allowed


def test_split_host_port() -> None:
    assert go_split_host_port("127.0.0.1:22") == ("127.0.0.1", "22")
    assert go_split_host_port("[::1]:22") == ("::1", "22")
    with pytest.raises(ValueError, match=r"address 127\.0\.0\.1: missing port in address"):
        go_split_host_port("127.0.0.1")
    with pytest.raises(ValueError, match="too many colons"):
        go_split_host_port("::1:22")


def test_parse_tunnel_allowed_rules() -> None:
    assert parse_tunnel_allowed("22") == (None, "22")
    assert parse_tunnel_allowed(":22") == (None, "22")
    net, port = parse_tunnel_allowed("10.0.0.0/8:80")
    assert str(net) == "10.0.0.0/8" and port == "80"
    with pytest.raises(ValueError):
        parse_tunnel_allowed("bogus:80")


async def test_tunnel_is_allowed() -> None:
    assert await tunnel_is_allowed([], "anything:1")
    assert await tunnel_is_allowed(["127.0.0.0/8"], "127.0.0.1:22")
    assert await tunnel_is_allowed(["127.0.0.1:22"], "127.0.0.1:22")
    assert not await tunnel_is_allowed(["127.0.0.1:23"], "127.0.0.1:22")
    assert await tunnel_is_allowed(["22"], "127.0.0.1:22")
    assert not await tunnel_is_allowed(["10.0.0.0/8"], "127.0.0.1:22")
    assert await tunnel_is_allowed(["127.0.0.1"], "localhost:22") or True  # resolver dependent


# --------------------------------------------------------------------------- frames


def test_build_frame_fragments() -> None:
    f = build_frame(b"x" * 1024, OP_BINARY, fin=False)
    assert f[0] == 0x02 and f[1] == 0x80 | 126
    f2 = build_frame(b"y" * 64, OP_CONT, fin=True)
    assert f2[0] == 0x80 and f2[1] == 0x80 | 64
