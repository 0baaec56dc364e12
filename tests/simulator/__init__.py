"""Faithful simulator of the RPort/OpenRPort 0.9.x client (wire protocol only).

Independent of the ``rportd`` package on purpose: nothing is imported from it, so
server bugs are not mirrored.  See ``protocol.md`` for the behaviour reproduced.

Typical use::

    sim = RportClientSim(SimulatorConfig(server="ws://127.0.0.1:8080", auth="id:pw",
                                         client_id="c1", connect_jitter=0))
    await sim.start()
    await sim.wait_registered(10)
    ...
    await sim.stop()
"""

from .client import ConnectFailure, ConnectResult, RportClientSim, SimConnection, backoff_delay
from .commands import command_allowed
from .config import SimulatorConfig, normalize_server_url, parse_remote
from .gob import GobDecoder, GobEncoder, UDPAddr, UDPMessage
from .ssh import md5_fingerprint
from .transport import RawWebSocket, http_request, make_http_session, open_raw

__all__ = [
    "ConnectFailure",
    "ConnectResult",
    "GobDecoder",
    "GobEncoder",
    "RawWebSocket",
    "RportClientSim",
    "SimConnection",
    "SimulatorConfig",
    "UDPAddr",
    "UDPMessage",
    "backoff_delay",
    "command_allowed",
    "http_request",
    "make_http_session",
    "md5_fingerprint",
    "normalize_server_url",
    "open_raw",
    "parse_remote",
]
