"""The commands that run the mesh's processes in the foreground: `mesh broker`, `mesh worker`
and `mesh up` (a broker and workers; with --slurm, a Slurm job's mesh)."""
import os
import signal
import socket
import sys
import time

import click

from .. import settings
from ..lifecycle import die_with_parent, limit_blas_here, name_process, raise_on_sigterm
from ..sizes import parse_size
from .calls import broker_option, call


keys_option = click.option("--keys", "keys_dir", envvar=settings.KEYS, type=click.Path(file_okay=False), default=None,
                           help="CurveZMQ keys folder (mesh keys generate): encrypt and authenticate every socket.")
insecure_option = click.option("--insecure", is_flag=True,
                               help="Allow a non-loopback address without keys (anyone who reaches it can use it).")
dashboard_option = click.option(
    "--dashboard", default=None, metavar="ADDR:PORT|off",
    help="Where the web dashboard and /metrics listen (default 127.0.0.1:8787, or any free port when that one "
         "is taken; port 0: any free port); off: no dashboard.")
dashboard_token_option = click.option(
    "--dashboard-token", default=None,
    help="Serve the dashboard only with this token (?token= in the URL, or Authorization: Bearer); needed on a "
         "non-loopback address unless --keys (a random one then) or --insecure.")


def _memory(ctx, param, value):
    """--memory 1.5GiB -> bytes (None: no budget); a bad size is a one-line error."""
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _lifetime():
    """Processes started by `mesh up` or mesh.local die with their launcher."""
    if settings.die_with_parent():
        die_with_parent(signal.SIGTERM)
        if os.getppid() == 1:  # the launcher is already gone
            sys.exit(1)


def _dashboard(value, token, keys, insecure):
    """Where the dashboard listens (None: off); refuses a non-loopback address left open."""
    from ..dashboard.listen import Refused, allowed, parse
    try:
        listen = allowed(parse(value), token, keys=keys, insecure=insecure)
    except Refused as e:
        raise click.ClickException(str(e)) from None
    if listen is not None and listen.warning:
        click.echo(listen.warning, err=True)
    return listen


def _keys(keys_dir, role, address, insecure):
    """The process's keys, or None; refuses a non-loopback address without keys unless --insecure."""
    from ..security import KeyError_, Keys, is_loopback
    if keys_dir:
        try:
            return Keys(keys_dir, role)
        except KeyError_ as e:
            raise click.ClickException(str(e)) from None
    if not is_loopback(address):
        if not insecure:
            raise click.ClickException(
                f"{address} is reachable from other hosts and no keys are set: anyone who reaches it could use "
                f"the mesh. Run `mesh keys generate DIR` and pass --keys DIR (or MESH_KEYS), or --insecure.")
        click.echo(f"WARNING: {address} without keys: traffic is plain text and anyone who reaches it can "
                   f"use the mesh", err=True)
    return None


def _pair_secret(keys, insecure):
    """A keyless pair's shared secret (MESH_PAIR_SECRET), or None where keys authenticate the peer."""
    if keys is not None:
        return None
    value = settings.pair_secret()
    if value:
        if len(value) < 16:
            raise click.ClickException("MESH_PAIR_SECRET must be at least 16 characters (a random one)")
        return value.encode()
    if not insecure:
        raise click.ClickException(
            "a pair without keys needs a secret the two brokers share, or any local process could speak for "
            "the peer: set MESH_PAIR_SECRET to the same random value on both (python3 -c 'import secrets; "
            "print(secrets.token_hex(16))'), or pass --keys; --insecure runs the pair unauthenticated.")
    click.echo("WARNING: a pair without keys or MESH_PAIR_SECRET: any local process can speak for the peer broker",
               err=True)
    return None


@click.command()
@click.option("--bind", default="tcp://127.0.0.1:5555", show_default=True, help="Address clients and workers dial.")
@keys_option
@insecure_option
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help="Where train(checkpoint_every=...) writes (default: $XDG_STATE_HOME/neuromesh/checkpoints, else "
                   "~/.local/state/neuromesh/checkpoints, else neuromesh-checkpoints in the working directory).")
@dashboard_option
@dashboard_token_option
@click.option("--peer", default=None, metavar="ADDR",
              help="The other broker of a pair: its client address (its --bind). One of the two is active, the "
                   "other its standby, which takes over if the active one dies.")
@click.option("--primary", is_flag=True, help="With --peer: this one starts active (the other: as standby).")
@click.option("--heartbeat-expiry", type=float, default=None, metavar="SECONDS",
              help="Silence after which a group is in doubt, before its host's load stretches it; a silent group "
                   "is replaced once its worker reports it stopped or idle (default: MESH_HEARTBEAT_EXPIRY, else 5).")
def broker(bind, keys_dir, insecure, checkpoint_dir, dashboard, dashboard_token, peer, primary, heartbeat_expiry):
    """Run the broker in the foreground; it serves the web dashboard too."""
    name_process("mesh broker")
    _lifetime()
    raise_on_sigterm()
    logging_setup()
    keys = _keys(keys_dir, "broker", bind, insecure)
    secret = None
    if peer:
        _keys(keys_dir, "broker", peer, insecure)  # the pair's channel is keyed like every other
        secret = _pair_secret(keys, insecure)
    elif primary:
        raise click.UsageError("--primary is for one of a pair: give the other broker with --peer")
    listen = _dashboard(dashboard, dashboard_token, keys is not None, insecure)
    from ..broker import BindError, main
    from ..broker.liveness import base_expiry
    try:
        base_expiry(heartbeat_expiry)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--heartbeat-expiry") from None
    try:
        main(bind, keys, checkpoint_dir, listen, peer=peer, primary=primary, pair_secret=secret,
             heartbeat_expiry=heartbeat_expiry)
    except BindError as e:
        raise click.ClickException(str(e)) from None


@click.command()
@broker_option
@click.option("--advertise", default=None, help="Address other hosts reach this one at (default: the route to the broker).")
@click.option("--listen", default=None, help="Interface group inboxes bind (default: the advertised address).")
@click.option("--slots", type=int, default=None, help="Capacity for placement (default: CPU count).")
@click.option("--blas-threads", type=int, default=1, show_default=True, help="BLAS threads per group process.")
@click.option("--memory", default=None, callback=_memory, metavar="SIZE",
              help="Memory this worker and its groups may hold, e.g. 1.5GiB (KiB/MiB/GiB/KB/MB/GB or bytes); "
                   "networks are placed within it (default: its memory cgroup's limit or the host's available "
                   "memory at start, whichever is less, less 10%; workers of one host share that).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where its groups keep their snapshot files, in a folder of this worker's removed when it "
                   "ends (default: $XDG_STATE_HOME/neuromesh, else ~/.local/state/neuromesh).")
@click.option("--disk", default=None, callback=_memory, metavar="SIZE",
              help="Disk its groups' snapshots may take, e.g. 20GiB (default: the state folder's free space "
                   "at start less 10%, shared by the workers on that file system).")
@keys_option
@insecure_option
def worker(broker, advertise, listen, slots, blas_threads, memory, state_dir, disk, keys_dir, insecure):
    """Run a worker: it joins the broker and starts group processes on its word."""
    name_process("mesh worker")
    _lifetime()
    limit_blas_here(blas_threads)  # before numpy loads, so every group inherits the bound
    raise_on_sigterm()
    logging_setup()
    from ..brokers import parse
    from ..sockets import host_of
    from ..worker import main, route_address
    try:
        first = parse(broker)[0]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None
    where = listen or advertise or route_address(host_of(first))
    keys = _keys(keys_dir, "worker", f"tcp://{where}:0", insecure)
    try:
        main(broker, advertise, listen, slots, keys, say=lambda line: click.echo(line) or sys.stdout.flush(),
             memory=memory, state_dir=state_dir, disk=disk)
    except KeyboardInterrupt:
        pass


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--bind", default="tcp://127.0.0.1:5555", show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Local workers to start.")
@click.option("--slots", type=int, default=None, help="Capacity of each worker.")
@click.option("--worker-memory", default=None, callback=_memory, metavar="SIZE",
              help="Memory budget of each local worker, e.g. 800MiB (default: they share what the host "
                   "or their cgroup allows).")
@click.option("--blas-threads", type=int, default=1, show_default=True)
@click.option("--hosts", "hosts_file", type=click.Path(exists=True, dir_okay=False),
              help="Start a worker on each host listed in this file, over ssh, instead of local workers.")
@click.option("--advertise", default=None, help="With --hosts: the address the hosts reach this broker at.")
@click.option("--ssh", "ssh_cmd", default=None, help="With --hosts: the command that runs a command on a host.")
@click.option("--remote-command", default="mesh", show_default=True, help="With --hosts: how the hosts run mesh.")
@insecure_option
@keys_option
@dashboard_option
@dashboard_token_option
@click.option("--standby", is_flag=True,
              help="Two brokers on free loopback ports, a pair: the second takes over if the first dies.")
@click.option("--slurm", is_flag=True,
              help="In a Slurm job's batch script: the broker here, a worker on each of the job's nodes (slots "
                   "and memory from the allocation), then COMMAND; the job's mesh ends with COMMAND or the job.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def up(ctx, bind, workers, slots, worker_memory, blas_threads, hosts_file, advertise, ssh_cmd, remote_command,
       insecure, keys_dir, dashboard, dashboard_token, standby, slurm, command):
    """Run a broker and workers in the foreground; Ctrl-C ends them all. With --slurm, run COMMAND
    in a Slurm job's mesh and exit with its code."""
    name_process("mesh up")
    raise_on_sigterm()
    if slurm or command:
        from ..slurmjob import up_slurm
        return up_slurm(ctx, command, say=lambda line: click.echo(line) or sys.stdout.flush(), keys_dir=keys_dir,
                        dashboard=dashboard, dashboard_token=dashboard_token, blas_threads=blas_threads, slots=slots,
                        worker_memory=worker_memory)
    _dashboard(dashboard, dashboard_token, bool(keys_dir), insecure)  # refused here, before anything starts
    board = {"dashboard": dashboard, "dashboard_token": dashboard_token}
    from ..localmesh import LocalMesh
    if hosts_file:
        from ..remote import SSH, RemoteMesh, read_hosts
        if not advertise:
            raise click.UsageError("--hosts needs --advertise: the address the hosts reach this broker at")
        hosts = call(lambda: read_hosts(hosts_file))
        m = RemoteMesh(hosts, advertise, ssh=ssh_cmd or SSH, remote_command=remote_command, blas_threads=blas_threads,
                       bind=bind, insecure=insecure, keys=keys_dir, **board)
        workers = len(hosts)
    else:
        m = LocalMesh(workers, slots=slots, blas_threads=blas_threads, bind=bind, insecure=insecure,
                      worker_memory=worker_memory, standby=standby, keys=keys_dir, **board)
    if standby and hosts_file:
        raise click.UsageError("--standby starts both brokers here; with --hosts, start them with `mesh broker --peer`")
    if not standby:
        _refuse_busy(bind)
    try:
        try:
            m.start()
        except (RuntimeError, TimeoutError) as e:
            raise click.ClickException(str(e)) from None
        brokers = [p.pid for p in m.brokers]
        worker_pids = [pid for pid in m.pids() if pid not in brokers]
        what = f"brokers {m.address} (pids {brokers[0]}, standby {brokers[1]})" if standby else \
            f"broker {m.address} (pid {brokers[0]})"
        click.echo(f"mesh up: {what}, {workers} workers (pids {', '.join(map(str, worker_pids))}); Ctrl-C to stop")
        if m.dashboard_url:
            click.echo(f"dashboard: {m.dashboard_url}")
        while _all_running(m, standby):
            time.sleep(0.5)
        click.echo("a mesh process exited; stopping", err=True)
    except KeyboardInterrupt:
        pass
    finally:
        m.stop()


def _all_running(m, standby):
    """Every process lives; with a standby, one broker may die (the other takes over)."""
    if standby:
        workers = [p for p in m.procs if p not in m.brokers]
        return all(p.poll() is None for p in workers) and any(p.poll() is None for p in m.brokers)
    return all(p.poll() is None for p in m.procs)


def _refuse_busy(bind):
    """A second `mesh up` on a port in use: one line here, not the broker's error and then ours."""
    host, _, port = bind.removeprefix("tcp://").rpartition(":")
    if not bind.startswith("tcp://") or not port.isdigit():
        return  # a port the system picks, or not tcp: nothing to collide with
    host = host.strip("[]")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        try:
            s.bind(("" if host in ("*", "0.0.0.0") else host, int(port)))
        except OSError as e:
            raise click.ClickException(f"cannot listen on {bind}: {e.strerror} (is another mesh running there?)") \
                from None


def logging_setup():
    import logging
    logging.basicConfig(level=settings.log_level(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
