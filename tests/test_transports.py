"""Transports against real parts: the local file system and bash, and a private OpenSSH server."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from miniengine.transports import (
    Transport,
    TransportError,
    TransportFactory,
    TransportFileNotFoundError,
    TransportPool,
)
from miniengine.transports.local import LocalTransport
from miniengine.transports.ssh import SshTransport
from tests.services.sshd import SshServer, running_sshd


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    with running_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(params=["core.local", "core.ssh"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    if request.param == "core.local":
        made: Transport = LocalTransport(use_login_shell=False)
    else:
        server: SshServer = request.getfixturevalue("sshd")
        made = SshTransport(server.host, **server.transport_params())
    async with made:
        yield made


async def test_commands_report_status_output_and_read_stdin(
    transport: Transport, tmp_path: Path
) -> None:
    retval, stdout, stderr = await transport.exec_command_wait(
        'read line; echo "got $line in $PWD"; echo oops >&2; exit 7',
        stdin="hello\n",
        workdir=str(tmp_path),
    )
    assert (retval, stdout, stderr) == (7, f"got hello in {tmp_path}\n", "oops\n")
    assert (
        await transport.whoami()
        == subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    )


async def test_files_and_folders_round_trip(transport: Transport, tmp_path: Path) -> None:
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("alpha")
    (local / "sub" / "b.bin").write_bytes(bytes(range(256)))
    remote = str(tmp_path / "remote")
    await transport.makedirs(remote)
    with pytest.raises(TransportError, match="exists"):
        await transport.makedirs(remote)
    await transport.makedirs(remote, ignore_existing=True)
    await transport.put(local, remote)
    await transport.put(local / "a.txt", f"{remote}/copy.txt")
    assert await transport.listdir(remote) == ["a.txt", "copy.txt", "sub"]
    assert await transport.isdir(f"{remote}/sub") and not await transport.isfile(f"{remote}/sub")
    assert await transport.isfile(f"{remote}/sub/b.bin")
    assert not await transport.path_exists(f"{remote}/nothing")
    assert await transport.read_bytes(f"{remote}/sub/b.bin") == bytes(range(256))

    back = tmp_path / "back"
    await transport.get(remote, back)
    assert (back / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert (back / "copy.txt").read_text() == "alpha"

    await transport.write_bytes(f"{remote}/a.txt", b"beta")
    assert await transport.read_bytes(f"{remote}/a.txt") == b"beta"
    assert await transport.listdir(remote) == ["a.txt", "copy.txt", "sub"]  # no temp file left

    await transport.copy(f"{remote}/sub", f"{remote}/sub2")
    await transport.symlink(f"{remote}/a.txt", f"{remote}/link")
    assert await transport.read_bytes(f"{remote}/link") == b"beta"
    assert await transport.read_bytes(f"{remote}/sub2/b.bin") == bytes(range(256))

    await transport.remove(f"{remote}/copy.txt")
    await transport.rmtree(f"{remote}/sub")
    await transport.rmtree(f"{remote}/not-there")  # nothing to remove is not an error
    assert await transport.listdir(remote) == ["a.txt", "link", "sub2"]


async def test_missing_paths_raise_file_not_found_naming_them(
    transport: Transport, tmp_path: Path
) -> None:
    missing = str(tmp_path / "missing.txt")
    for call in (
        transport.read_bytes(missing),
        transport.remove(missing),
        transport.listdir(missing),
        transport.get(missing, tmp_path / "x"),
        transport.put(tmp_path / "no-local-file", missing),
    ):
        with pytest.raises(TransportFileNotFoundError, match=r"missing|no-local-file") as raised:
            await call
        assert isinstance(raised.value, FileNotFoundError)


async def test_relative_paths_are_refused(transport: Transport) -> None:
    with pytest.raises(ValueError, match="absolute"):
        await transport.listdir("relative/path")
    with pytest.raises(ValueError, match="absolute"):
        await transport.exec_command_wait("true", workdir="relative")


async def test_cancelling_a_local_command_ends_its_process(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    async with LocalTransport(use_login_shell=False) as transport:
        with anyio.move_on_after(30) as scope:
            async with anyio.create_task_group() as group:

                async def run() -> None:
                    await transport.exec_command_wait(f"echo $$ > {marker}; exec sleep 300")

                group.start_soon(run)
                while not marker.exists() or not marker.read_text().strip():
                    await anyio.sleep(0.01)
                group.cancel_scope.cancel()
        assert not scope.cancelled_caught
    pid = int(marker.read_text())
    with anyio.fail_after(30):
        while _alive(pid):
            await anyio.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return status != "Z"


async def test_login_shell_reads_the_profile(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bash_profile").write_text("export FROM_PROFILE=yes\n")
    os.environ["HOME"], saved = str(home), os.environ["HOME"]
    try:
        async with LocalTransport() as login, LocalTransport(use_login_shell=False) as plain:
            assert (await login.exec_command_wait("echo $FROM_PROFILE")).stdout == "yes\n"
            assert (await plain.exec_command_wait("echo $FROM_PROFILE")).stdout == "\n"
    finally:
        os.environ["HOME"] = saved


# SSH: host keys and connection errors ------------------------------------------------------------


async def test_an_unknown_host_key_is_refused_by_default(sshd: SshServer, tmp_path: Path) -> None:
    params = {**sshd.transport_params(), "known_hosts": str(tmp_path / "empty_known_hosts")}
    with pytest.raises(TransportError, match="host key") as raised:
        async with SshTransport(sshd.host, **params):
            pass
    assert "ssh-keyscan" in str(raised.value)


async def test_auto_add_trusts_a_new_host_once_and_refuses_a_changed_key(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "known_hosts"
    params = {
        **sshd.transport_params(),
        "known_hosts": str(known_hosts),
        "key_policy": "AutoAddPolicy",
    }
    async with SshTransport(sshd.host, **params) as transport:
        assert (await transport.exec_command_wait("echo hi")).stdout == "hi\n"
    assert known_hosts.read_text().startswith(f"[127.0.0.1]:{sshd.port} ssh-ed25519 ")
    async with SshTransport(sshd.host, **{**params, "key_policy": "RejectPolicy"}):
        pass  # recorded, so known from now on

    other_key = tmp_path / "other_host_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    known_hosts.write_text(
        f"[127.0.0.1]:{sshd.port} {' '.join(Path(f'{other_key}.pub').read_text().split()[:2])}\n"
    )
    with pytest.raises(TransportError, match=r"differs|host key"):
        async with SshTransport(sshd.host, **params):
            pass


async def test_a_closed_port_is_a_transport_error_naming_the_computer(sshd: SshServer) -> None:
    from tests.services.sshd import free_port

    port = free_port()
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        async with SshTransport(sshd.host, **{**sshd.transport_params(), "port": port}):
            pass


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"port": "22"}, "port"),
        ({"port": 70000}, "port"),
        ({"key_policy": "TrustEveryone"}, "key_policy"),
        ({"safe_interval": -1}, "safe_interval"),
        ({"pasword": "x"}, "pasword"),
    ],
)
def test_bad_settings_raise_value_errors_naming_them(params: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        SshTransport("example.org", **params)


def test_transports_are_found_by_name() -> None:
    assert TransportFactory("core.local") is LocalTransport
    assert TransportFactory("core.ssh") is SshTransport
    with pytest.raises(ValueError, match=r"core\.ftp"):
        TransportFactory("core.ftp")


# the pool ---------------------------------------------------------------------------------------


class CountingTransport(LocalTransport):
    opened = 0

    async def open(self) -> None:
        type(self).opened += 1
        await super().open()


async def test_one_connection_per_computer_however_many_jobs_use_it() -> None:
    CountingTransport.opened = 0
    results: list[str] = []
    async with TransportPool() as pool:

        async def job(index: int) -> None:
            async with pool.request("computer-a", CountingTransport) as transport:
                results.append((await transport.exec_command_wait(f"echo {index}")).stdout)

        async with anyio.create_task_group() as group:
            for index in range(20):
                group.start_soon(job, index)
        assert pool.opens("computer-a") == 1
    assert CountingTransport.opened == 1
    assert sorted(results) == sorted(f"{index}\n" for index in range(20))


async def test_an_idle_connection_is_closed_and_reopened_when_needed() -> None:
    async with TransportPool(idle_timeout=0.05) as pool:
        async with pool.request("c", LocalTransport) as transport:
            assert transport.is_open
        with anyio.fail_after(30):
            while transport.is_open:
                await anyio.sleep(0.01)
        async with pool.request("c", LocalTransport) as again:
            assert again is transport and again.is_open
        assert pool.opens("c") == 2


async def test_over_ssh_the_pool_opens_one_connection_for_many_jobs(sshd: SshServer) -> None:
    async with TransportPool() as pool:

        def make() -> Transport:
            return SshTransport(sshd.host, **{**sshd.transport_params(), "safe_interval": 0})

        async def job(index: int) -> None:
            async with pool.request("ssh", make) as transport:
                result = await transport.exec_command_wait(f"echo {index}")
                assert result.stdout == f"{index}\n"

        async with anyio.create_task_group() as group:
            for index in range(10):
                group.start_soon(job, index)
        assert pool.opens("ssh") == 1


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds sshd's connections in /proc")
async def test_a_dropped_ssh_connection_is_reopened_with_working_file_transfers(
    sshd: SshServer, tmp_path: Path
) -> None:
    transport = SshTransport(sshd.host, **{**sshd.transport_params(), "safe_interval": 0})
    async with transport:
        await transport.write_bytes(str(tmp_path / "before"), b"1")
        sshd.drop_connections()
        with anyio.fail_after(10):  # the client learns of the close from its socket
            while transport.is_open:
                await anyio.sleep(0.01)
        await transport.open()
        await transport.write_bytes(str(tmp_path / "after"), b"2")  # not the dead SFTP client
        assert await transport.read_bytes(str(tmp_path / "after")) == b"2"


async def test_over_ssh_many_concurrent_commands_share_the_servers_sessions(
    sshd: SshServer, tmp_path: Path
) -> None:
    """OpenSSH serves at most ``MaxSessions`` (10) channels per connection and refuses more:
    the jobs of a worker share one connection, so their commands wait for a free session
    rather than fail (a failed submit backs off for seconds, then pauses the job)."""
    transport = SshTransport(sshd.host, **{**sshd.transport_params(), "safe_interval": 0})

    async def command(index: int) -> None:
        result = await transport.exec_command_wait(f"sleep 0.2; echo {index}")
        assert result.stdout == f"{index}\n"

    async with transport:
        await transport.write_bytes(str(tmp_path / "sftp"), b"the SFTP session is open too")
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for index in range(30):
                    group.start_soon(command, index)
        assert await transport.read_bytes(str(tmp_path / "sftp")) == b"the SFTP session is open too"


async def test_over_ssh_concurrent_file_transfers_start_one_sftp_session(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The first file operations of many jobs at once on a new connection share one SFTP
    session: one each would use up the server's sessions, and every command after them fails."""
    transport = SshTransport(sshd.host, **{**sshd.transport_params(), "safe_interval": 0})

    async def write(index: int) -> None:
        await transport.write_bytes(str(tmp_path / f"file-{index}"), b"%d" % index)

    async with transport:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as group:
                for index in range(30):
                    group.start_soon(write, index)
        assert (await transport.exec_command_wait("echo still")).stdout == "still\n"
    assert sorted(path.read_bytes() for path in tmp_path.iterdir()) == sorted(
        b"%d" % index for index in range(30)
    )
