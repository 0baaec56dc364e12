"""The SFTP side of a push: a client reads only what is pushed to it, and writes nothing (§6.2)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from rportd.app import RportServer
from tests.conftest import Api
from tests.simulator import RportClientSim
from tests.uploads.conftest import Feed, SimFactory, push


def ssh_of(sim: RportClientSim) -> Any:
    assert sim.conn is not None and sim.conn.ssh is not None
    return sim.conn.ssh


async def test_paths_outside_the_upload_directory_are_refused(
    server: RportServer, start_sim: SimFactory
) -> None:
    sim = await start_sim("c1")
    assert server.uploads is not None
    root = server.uploads.directory
    stray = root / "planted_rport_filepush"
    stray.write_bytes(b"not pushed to anyone")
    async with ssh_of(sim).start_sftp_client() as sftp:
        for path in ("/etc/hostname", "../../../../etc/hostname", f"{root}/../x", "/"):
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.open(path, "rb")
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.stat(path)
        # inside, but not being pushed to this client: as if it did not exist
        for path in (str(stray), stray.name, str(root)):
            with pytest.raises(asyncssh.SFTPNoSuchFile):
                await sftp.open(path, "rb")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.listdir(str(root))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.readlink(str(stray))


async def test_nothing_can_be_written(server: RportServer, start_sim: SimFactory) -> None:
    sim = await start_sim("c1")
    assert server.uploads is not None
    root = server.uploads.directory
    target = root / "new_rport_filepush"
    async with ssh_of(sim).start_sftp_client() as sftp:
        for mode in ("wb", "ab", "r+b", "xb"):
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.open(str(target), mode)
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.open("/tmp/elsewhere", "wb")
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.mkdir(str(root / "d"))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.remove(str(target))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.rename(str(target), str(root / "other"))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.symlink("/etc/hostname", str(root / "link"))
        with pytest.raises(asyncssh.SFTPPermissionDenied):
            await sftp.chmod(str(root), 0o777)
    assert list(root.iterdir()) == []


async def test_only_the_sftp_subsystem_is_served(start_sim: SimFactory) -> None:
    ssh = ssh_of(await start_sim("c1"))
    for kwargs in ({"command": "id"}, {}, {"subsystem": "shell"}):
        with pytest.raises(asyncssh.ChannelOpenError):
            await ssh.create_session(asyncssh.SSHClientSession, **kwargs)
    with pytest.raises(asyncssh.ChannelOpenError):
        await ssh.create_session(asyncssh.SSHClientSession, subsystem="sftp", term_type="xterm")
    async with ssh.start_sftp_client():  # and the connection still serves SFTP
        pass


async def test_a_pushed_file_is_readable_only_by_its_target_while_pushed(
    api: Api, server: RportServer, start_sim: SimFactory, feed: Feed, tmp_path: Path
) -> None:
    target = await start_sim("c1", data_dir=str(tmp_path / "c1"))
    other = await start_sim("c2", data_dir=str(tmp_path / "c2"))
    seen: asyncio.Queue[str] = asyncio.Queue()
    gate = asyncio.Event()
    original = target._req_upload

    async def held(c: Any, payload: bytes) -> bytes:
        seen.put_nowait(target.uploads[-1]["SourceFilePath"] if target.uploads else "")
        await gate.wait()
        return await original(c, payload)

    target._req_upload = held  # type: ignore[method-assign]
    dest = tmp_path / "secret.txt"
    status, body = await push(api, b"for c1 only", client_id="c1", dest=str(dest))
    assert status == 200, body
    await asyncio.wait_for(seen.get(), 10)
    assert server.uploads is not None
    source = str(server.uploads.directory / f"{body['data']['uuid']}_rport_filepush")
    async with ssh_of(other).start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.open(source, "rb")
    async with ssh_of(target).start_sftp_client() as sftp:
        async with sftp.open(source, "rb") as f:
            assert await f.read() == b"for c1 only"
        assert (await sftp.stat(source)).size == len(b"for c1 only")
    gate.set()
    assert (await feed.next())["status"] == "success"
    async with ssh_of(target).start_sftp_client() as sftp:
        with pytest.raises(asyncssh.SFTPNoSuchFile):
            await sftp.open(source, "rb")
