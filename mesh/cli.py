"""The `mesh` command. Every option can also be set from the environment:
MESH_BROKER for the broker address, MESH_<COMMAND>_<OPTION> for the rest
(e.g. MESH_WORKER_SLOTS=4)."""
import json
import os
import signal
import socket
import sys
import time

import click

from . import __version__
from .lifecycle import die_with_parent, limit_blas_here, name_process, raise_on_sigterm
from .sizes import format_size, parse_size

broker_option = click.option("--broker", "broker", envvar="MESH_BROKER", default="tcp://127.0.0.1:5555",
                             show_default=True, help="Address of the broker, or of a pair's two: tcp://A:5555,tcp://B:5555.")
keys_option = click.option("--keys", "keys_dir", envvar="MESH_KEYS", type=click.Path(file_okay=False), default=None,
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
timeout_option = click.option("--timeout", type=float, default=60.0, show_default=True,
                              help="Seconds to wait for an answer.")


def _memory(ctx, param, value):
    """--memory 1.5GiB -> bytes (None: no budget); a bad size is a one-line error."""
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def _group_size(ctx, param, value):
    if value is None or value == "balanced":
        return value
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"expected a whole number of neurons (1 or more) or 'balanced', got {value!r}")
    return int(value)


def _lifetime():
    """Processes started by `mesh up` or mesh.local die with their launcher."""
    if os.environ.get("MESH_DIE_WITH_PARENT") == "1":
        die_with_parent(signal.SIGTERM)
        if os.getppid() == 1:  # the launcher is already gone
            sys.exit(1)


def _client(broker, timeout):
    import zmq

    from .client import Client
    from .security import KeyError_
    try:
        return Client(broker, timeout=timeout)
    except (ValueError, zmq.ZMQError) as e:  # not a broker address (brokers.parse), or one zmq cannot dial
        raise click.BadParameter(f"{broker!r}: {e}" if isinstance(e, zmq.ZMQError) else str(e),
                                 param_hint="--broker") from None
    except KeyError_ as e:
        raise click.ClickException(str(e)) from None


def _call(fn):
    """Run a client call; a refusal, silence, bad data or a file that cannot be written
    is a one-line error, not a traceback."""
    from .client import MeshTimeout, RemoteError
    try:
        return fn()
    except (RemoteError, MeshTimeout, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None


@click.group(context_settings={"auto_envvar_prefix": "MESH", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mesh", message="%(prog)s %(version)s")
def cli():
    """neuromesh: a neural network run as a mesh of processes talking ZeroMQ."""


def _dashboard(value, token, keys, insecure):
    """Where the dashboard listens (None: off); refuses a non-loopback address left open."""
    from .dashboard.listen import Refused, allowed, parse
    try:
        listen = allowed(parse(value), token, keys=keys, insecure=insecure)
    except Refused as e:
        raise click.ClickException(str(e)) from None
    if listen is not None and listen.warning:
        click.echo(listen.warning, err=True)
    return listen


def _keys(keys_dir, role, address, insecure):
    """The process's keys, or None; refuses a non-loopback address without keys unless --insecure."""
    from .security import KeyError_, Keys, is_loopback
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
    value = os.environ.get("MESH_PAIR_SECRET", "")
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


@cli.command()
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
    from .broker import BindError, main
    from .broker.liveness import base_expiry
    try:
        base_expiry(heartbeat_expiry)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--heartbeat-expiry") from None
    try:
        main(bind, keys, checkpoint_dir, listen, peer=peer, primary=primary, pair_secret=secret,
             heartbeat_expiry=heartbeat_expiry)
    except BindError as e:
        raise click.ClickException(str(e)) from None


@cli.command()
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
    from .brokers import parse
    from .sockets import host_of
    from .worker import main, route_address
    try:
        first = parse(broker)[0]
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--broker") from None
    where = listen or advertise or route_address(host_of(first))
    keys = _keys(keys_dir, "worker", f"tcp://{where}:0", insecure)
    if keys_dir:
        os.environ["MESH_KEYS"] = keys_dir  # the groups it forks load the same keys
    try:
        main(broker, advertise, listen, slots, keys, say=lambda line: click.echo(line) or sys.stdout.flush(),
             memory=memory, state_dir=state_dir, disk=disk)
    except KeyboardInterrupt:
        pass


@cli.command(context_settings={"allow_interspersed_args": False})
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
        from .slurmjob import up_slurm
        return up_slurm(ctx, command, say=lambda line: click.echo(line) or sys.stdout.flush(), keys_dir=keys_dir,
                        dashboard=dashboard, dashboard_token=dashboard_token, blas_threads=blas_threads, slots=slots,
                        worker_memory=worker_memory)
    _dashboard(dashboard, dashboard_token, bool(keys_dir), insecure)  # refused here, before anything starts
    board = {"dashboard": dashboard, "dashboard_token": dashboard_token}
    from .localmesh import LocalMesh
    if keys_dir:  # the broker and local workers inherit it; remote workers get --keys (same path on each host)
        os.environ["MESH_KEYS"] = keys_dir
    if hosts_file:
        from .remote import SSH, RemoteMesh, read_hosts
        if not advertise:
            raise click.UsageError("--hosts needs --advertise: the address the hosts reach this broker at")
        hosts = _call(lambda: read_hosts(hosts_file))
        m = RemoteMesh(hosts, advertise, ssh=ssh_cmd or SSH, remote_command=remote_command, blas_threads=blas_threads,
                       bind=bind, insecure=insecure, **board)
        workers = len(hosts)
    else:
        m = LocalMesh(workers, slots=slots, blas_threads=blas_threads, bind=bind, insecure=insecure,
                      worker_memory=worker_memory, standby=standby, **board)
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


def _sizes(ctx, param, value):
    parts = value.replace("[", "").replace("]", "").split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise click.BadParameter(f"expected whole numbers separated by commas, like 5,5,1; got {value!r}")
    return [int(p) for p in parts]


def _inputs(ctx, param, value):
    """--inputs K=S,S... (repeated) -> {K: [S, ...]}; the broker checks the graph."""
    graph = {}
    for item in value:
        layer, eq, sources = item.partition("=")
        if not eq or not layer.strip().isdigit() or not all(s.strip().isdigit() for s in sources.split(",")):
            raise click.BadParameter(f"expected LAYER=SOURCE,SOURCE..., like 3=2,1,0 (0: the rows); got {item!r}")
        if int(layer) in graph:
            raise click.BadParameter(f"layer {int(layer)} is given twice")
        graph[int(layer)] = [int(s) for s in sources.split(",")]
    return graph or None


@cli.command()
@click.argument("sizes", callback=_sizes)
@click.option("--group-size", default=None, callback=_group_size,
              help="Neurons per process, or 'balanced' (equal work per process); default: a whole layer, cut "
                   "only as the workers' memory budgets require.")
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "adam"]), default="adam", show_default=True,
              help="The optimizer to plan memory for (training with one that keeps more state re-checks it).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--activation", default="sigmoid", show_default=True)
@click.option("--output", default="sigmoid", show_default=True)
@click.option("--loss", default="mse", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--inputs", multiple=True, callback=_inputs, metavar="LAYER=SOURCES",
              help="What a layer reads, e.g. 3=2,1,0: layer 3 sees layers 2 and 1 and the rows (0), concatenated "
                   "in that order; repeat for each layer. Default: each layer reads the one before.")
@broker_option
@timeout_option
def create(sizes, group_size, optimizer, seed, activation, output, loss, dtype, inputs, broker, timeout):
    """Create a network of SIZES (hidden layers then outputs, e.g. 5,5,1); prints its id."""
    with _client(broker, timeout) as c:
        net = _call(lambda: c.create(sizes, group_size=group_size, seed=seed, activation=activation,
                                     output=output, loss=loss, dtype=dtype, optimizer=optimizer, inputs=inputs))
        click.echo(net.id)


def _parse_cell(s):
    """A cell typed on the command line: a number, nothing (missing), or text."""
    s = s.strip()
    if not s:
        return None
    try:
        return float(s)
    except ValueError:
        return s


@cli.command()
@click.argument("net")
@click.argument("rows", nargs=-1)
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False),
              help="Rows from a CSV file (with header; columns matched by name to those trained on).")
@click.option("--allow-new-kinds", is_flag=True,
              help="Take text at a position that only held numbers in training as an unseen value.")
@click.option("--outputs", "raw", is_flag=True, help="Print the network's outputs, not class labels.")
@broker_option
@timeout_option
def predict(net, rows, csv_path, allow_new_kinds, raw, broker, timeout):
    """Predict ROWS (comma-separated values, e.g. 0,1 1,0; rows may differ in length) or a
    CSV file's rows. A network trained by `mesh train` on a text column prints its classes."""
    from .csvdata import read_inputs, read_outputs  # numpy loads only once a command needs it (see worker)
    if not rows and not csv_path:
        raise click.UsageError("give ROWS or --csv FILE")
    with _client(broker, timeout) as c:
        network = _call(lambda: c.network(net))
        target = network.info.get("target")
        data = _call(lambda: read_inputs(csv_path, target)) if csv_path else \
            [[_parse_cell(v) for v in r.split(",")] for r in rows]
        out = _call(lambda: network.predict(data, remember=False, strict=not allow_new_kinds))
    for line in read_outputs(out, None if raw else target):
        click.echo(line)


@cli.command()
@click.argument("net")
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", required=True, help="Column to learn.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "momentum", "adam"]), default="sgd", show_default=True)
@click.option("--alpha", type=click.FloatRange(min=0), default=0.0, show_default=True, help="L2 weight decay.")
@click.option("--micro-batches", type=click.IntRange(min=1), default=None,
              help="Micro-batches each mini-batch is cut into (default: chosen from the network's shape).")
@click.option("--mode", type=click.Choice(["exact", "async"]), default="exact", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Write the network every N steps and at the end, inside the broker's --checkpoint-dir.")
@click.option("--checkpoint-name", default=None, help="File name for --checkpoint-every (default: NET.npz).")
@broker_option
@timeout_option
def train(net, csv_path, target, epochs, batch_size, learning_rate, optimizer, alpha, micro_batches, mode, seed,
          checkpoint_every, checkpoint_name, broker, timeout):
    """Train NET on a CSV file, learning column TARGET from the others.

    Numbers are standardised with this file's statistics (kept with the network and
    applied to every row it sees afterwards); a text target becomes classes (one output
    per class, or one sigmoid output for two); a number target is learned as it is, or
    standardised for a linear output. One run of every epoch (as `mesh status` and the
    dashboard show it); one line per epoch, as each ends. A loss that is not a finite
    number stops the run with an error naming the step."""
    from .csvdata import read_xy, targets_for
    from .table import Rows
    inputs, X, y = _call(lambda: read_xy(csv_path, target))
    with _client(broker, timeout) as c:
        network = _call(lambda: c.network(net))
        info = network.info
        Y, record = _call(lambda: targets_for(target, inputs, y, info["sizes"][-1], info["output"],
                                                known=info.get("target")))
        rows = _call(lambda: Rows(X, learn={"standardize": True, "target": record}))

        def said(epoch, loss):
            click.echo(f"epoch {epoch}: loss {loss:.6g}")
            sys.stdout.flush()
        try:  # one run of every epoch: status, the dashboard and cancel see it whole
            _call(lambda: network.train(
                rows, Y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                micro_batches=micro_batches, optimizer={"name": optimizer, "alpha": alpha}, mode=mode, seed=seed,
                progress=None if sys.stderr.isatty() else False, checkpoint_every=checkpoint_every,
                checkpoint_path=(checkpoint_name or f"{net}.npz") if checkpoint_every else None, on_epoch=said))
        except KeyboardInterrupt:  # Network.train cancelled it first
            stopped = getattr(network, "last_cancel", None)
            where = f"in epoch {stopped.epochs + 1} of {epochs}: " if stopped is not None and stopped.epochs < epochs \
                else ""
            raise click.ClickException(f"interrupted {where}{stopped or 'training stopped'}") from None
        if checkpoint_every:
            click.echo(f"checkpoint: {network.last_checkpoint} (on the broker's host)")


@cli.command()
@click.argument("net")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@broker_option
@timeout_option
def save(net, path, broker, timeout):
    """Write network NET (weights, optimizer state, encoder, spec) to the file PATH."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.ClickException(f"cannot write {path}: folder {folder} does not exist")
    with _client(broker, timeout) as c:
        network = _call(lambda: c.network(net))
        _call(lambda: network.save(path))
    click.echo(f"saved {net} to {path}")


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@broker_option
@timeout_option
def load(path, broker, timeout):
    """Start a network from a file written by `mesh save` (or a checkpoint); prints its id."""
    with _client(broker, timeout) as c:
        click.echo(_call(lambda: c.load(path)).id)


@cli.command()
@broker_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (everything, every process included).")
@click.option("--groups", is_flag=True, help="List every group process too.")
def status(broker, timeout, as_json, groups):
    """Workers, hosts and slots; each network's state, training progress, restarts."""
    with _client(broker, timeout) as c:
        s = _call(c.status)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    for line in status_lines(s, groups):
        click.echo(line)


def status_lines(s, groups=False):
    """A summary like `ray status`: the mesh, then one paragraph per network."""
    b, workers = s["broker"], s["workers"]
    hosts = sorted({w["host"] for w in workers})
    used, slots = sum(w["groups"] for w in workers), sum(w["slots"] for w in workers)
    yield f"broker {b['address']} (pid {b['pid']})"
    pair = b.get("pair")
    if pair:
        peer = f"{pair['peer_role'] or 'not heard'}"
        lag = "" if pair["lag"] is None else f", standby lag {pair['lag']} records"
        yield (f"  {pair['role']} broker of a pair (epoch {pair['epoch']}, {pair['failovers']} failovers here); "
               f"peer {pair['peer']}: {peer}{lag}")
    yield f"{len(workers)} workers on {len(hosts)} hosts, {used} group processes on {slots} slots"
    for w in workers:
        yield (f"  worker {w['name']:<4} {w['host']:<15} pid {w['pid']:<7} slots {w['slots']:<3} groups {w['groups']:<4}"
               f" {_memory_line(w.get('memory'))}{_memory_line(w.get('disk'), '; disk')}")
    if not s["networks"]:
        yield "no networks"
    for n in s["networks"]:
        yield (f"network {n['net']}: {n['state']}; sizes {n['sizes']}, {n['inputs']} inputs, {n['groups']} groups "
               f"({n['alive']} alive), {n['links']['total']} links ({n['links']['cross_host']} cross hosts)")
        if n["state"] == "failed":
            yield f"  failed: {n['failure']}"
        t = n.get("training")
        if t:
            loss = "-" if t.get("loss") is None else f"{t['loss']:.6g}"
            yield (f"  training: epoch {t['epoch']}/{t['epochs']}, step {t['step']}, loss {loss}, "
                   f"{t['rate']:,.0f} rows/s")
        yield f"  steps applied {n['steps']}, restarts {n['restarts']}" + (
            f", last failure: {n['last_failure']}" if n["last_failure"] else "")
        if groups:
            for p in n["processes"]:
                lo, hi = p["neurons"]
                state = "alive" if p["alive"] else "dead"
                yield (f"  {p['gid']:<12} layer {p['layer']} neurons {lo}..{hi - 1} pid {p['pid']} "
                       f"host {p['host']} worker {p['worker']} {state}")


def _memory_line(m, what="memory"):
    """memory planned 1.2 GiB of 1.5 GiB, measured 1.1 GiB (what="; disk": the disk's alike)"""
    if not m:
        return ""
    budget = f" of {format_size(m['budget'])}" if m.get("budget") else " (no budget)"
    measured = "-" if m.get("measured") is None else format_size(m["measured"])
    return f"{what} planned {format_size(m['planned'])}{budget}, measured {measured}"


@cli.command()
@click.argument("net")
@broker_option
@timeout_option
def cancel(net, broker, timeout):
    """Stop NET's training (at a step boundary) and online runs; it is ready again after."""
    with _client(broker, timeout) as c:
        r = _call(lambda: c.network(net).cancel())
    if "train" in r.get("cancelled", []):
        click.echo(f"cancelled training of {net} after {r['epochs']} epochs, {r['steps']} steps; {r['state']}")
    elif r.get("cancelled"):
        click.echo(f"cancelled the online runs of {net}; {r['state']}")
    else:
        click.echo(f"nothing to cancel: {net} is {r['state']}")


@cli.command()
@click.argument("net")
@broker_option
@timeout_option
def drop(net, broker, timeout):
    """End network NET's processes."""
    with _client(broker, timeout) as c:
        _call(lambda: c.network(net).drop())


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--workers", type=int, default=2, show_default=True, help="Local workers to start.")
@click.option("--quick", is_flag=True, help="A reduced run (as in the tests).")
@click.option("--data", type=click.Path(), default=None, help="Data file for demos that read one.")
def demo(names, workers, quick, data):
    """Run the original's experiments on a local mesh (simple, random, ... or all)."""
    from .demos import DEMOS, run
    from .localmesh import LocalMesh
    names = list(names) or ["simple"]
    if names == ["all"]:
        names = list(DEMOS)
    unknown = [n for n in names if n not in DEMOS]
    if unknown:
        raise click.UsageError(f"unknown demo {unknown[0]!r}; choose from {', '.join(DEMOS)} or all")
    rows = []
    with LocalMesh(workers) as client:
        for name in names:
            click.echo(f"{name}:")
            rows.append(run(name, client, quick=quick, data=data, log=click.echo))
    click.echo(f"\n{'demo':<8} {'result':<28} {'original':<36} {'time':>7}")
    for r in rows:
        click.echo(f"{r['demo']:<8} {r['result']:<28} {r['original']:<36} {r['seconds']:>6.1f}s")


@cli.command()
@click.argument("parts", nargs=-1, type=click.Choice(["throughput", "latency", "scaling", "dashboard", "failover",
                                                                 "dataplane", "sklearn"]))
@click.option("--rounds", type=int, default=3, show_default=True, help="Rounds per measurement (median, min-max).")
@click.option("--quick", is_flag=True, help="Smaller data and fewer rounds: a smoke run, not a result.")
def bench(parts, rounds, quick):
    """Run the benchmarks (default: throughput and latency) on a local mesh and print tables."""
    from .bench.suite import run
    tables = run(parts or ("throughput", "latency"), rounds=rounds, quick=quick, log=click.echo)
    for name, text in tables.items():
        click.echo(f"\n{name}\n{text}")


@cli.group()
def keys():
    """CurveZMQ keys: generate, allow, revoke."""


@keys.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", "names", multiple=True, help="Pair names (default: broker, worker, client).")
def keys_generate(directory, names):
    """Write key pairs (owner-only files) and allow-lists that admit them into DIRECTORY."""
    from .security import generate
    for name in generate(directory, names or ("broker", "worker", "client")):
        click.echo(f"{directory}/{name}.key (public), {directory}/{name}.key_secret (secret)")


@keys.command("allow")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("public_key", type=click.Path(dir_okay=False, exists=True))
@click.option("--kind", type=click.Choice(["mesh", "clients"]), default="clients", show_default=True,
              help="mesh: a broker or worker; clients: may use the broker.")
def keys_allow(directory, public_key, kind):
    """Admit PUBLIC_KEY (a .key file) to the mesh."""
    from .security import KeyError_, allow
    try:
        click.echo(f"allowed {allow(directory, public_key, kind)}")
    except (KeyError_, ValueError, OSError) as e:
        raise click.ClickException(f"{public_key} is not a public key file: {e}") from None


@keys.command("revoke")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.argument("name")
def keys_revoke(directory, name):
    """Stop admitting the key NAME (e.g. client-old); restart processes to drop live sessions."""
    from .security import revoke
    removed = revoke(directory, name)
    if not removed:
        raise click.ClickException(f"no allowed key named {name!r} in {directory}")
    for p in removed:
        click.echo(f"revoked {p}")


def logging_setup():
    import logging
    logging.basicConfig(level=os.environ.get("MESH_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def main():
    """A user's mistake, usage ones included, is one line starting with Error: and a non-zero exit."""
    try:
        code = cli.main(prog_name="mesh", standalone_mode=False)
    except getattr(click.exceptions, "NoArgsIsHelpError", ()) as e:  # plain `mesh`: its help, as ever
        click.echo(e.ctx.get_help())
        sys.exit(0)
    except click.UsageError as e:
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
        click.echo(f"Error: {e.format_message()}{hint}", err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"Error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("Aborted.", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
