"""The commands on one network: create, predict, train, save, load, cancel, drop."""
import os
import sys

import click

from .calls import broker_option, call, connect, timeout_option


def _group_size(ctx, param, value):
    if value is None or value == "balanced":
        return value
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"expected a whole number of neurons (1 or more) or 'balanced', got {value!r}")
    return int(value)


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


@click.command()
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
    with connect(broker, timeout) as c:
        net = call(lambda: c.create(sizes, group_size=group_size, seed=seed, activation=activation,
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


@click.command()
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
    from ..csvdata import read_inputs, read_outputs  # numpy loads only once a command needs it (see worker)
    if not rows and not csv_path:
        raise click.UsageError("give ROWS or --csv FILE")
    with connect(broker, timeout) as c:
        network = call(lambda: c.network(net))
        target = network.info.get("target")
        data = call(lambda: read_inputs(csv_path, target)) if csv_path else \
            [[_parse_cell(v) for v in r.split(",")] for r in rows]
        out = call(lambda: network.predict(data, remember=False, strict=not allow_new_kinds))
    for line in read_outputs(out, None if raw else target):
        click.echo(line)


@click.command()
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
@click.option("--resident/--no-resident", default=None,
              help="Exact mode: the rows go to each host once and the groups make every step (the broker's "
                   "default), or the broker sends each step.")
@broker_option
@timeout_option
def train(net, csv_path, target, epochs, batch_size, learning_rate, optimizer, alpha, micro_batches, mode, seed,
          checkpoint_every, checkpoint_name, resident, broker, timeout):
    """Train NET on a CSV file, learning column TARGET from the others.

    Numbers are standardised with this file's statistics (kept with the network and
    applied to every row it sees afterwards); a text target becomes classes (one output
    per class, or one sigmoid output for two); a number target is learned as it is, or
    standardised for a linear output. One run of every epoch (as `mesh status` and the
    dashboard show it); one line per epoch, as each ends. A loss that is not a finite
    number stops the run with an error naming the step."""
    from ..csvdata import read_xy, targets_for
    from ..table import Rows
    inputs, X, y = call(lambda: read_xy(csv_path, target))
    with connect(broker, timeout) as c:
        network = call(lambda: c.network(net))
        info = network.info
        Y, record = call(lambda: targets_for(target, inputs, y, info["sizes"][-1], info["output"],
                                                known=info.get("target")))
        rows = call(lambda: Rows(X, learn={"standardize": True, "target": record}))

        def said(epoch, loss):
            click.echo(f"epoch {epoch}: loss {loss:.6g}")
            sys.stdout.flush()
        try:  # one run of every epoch: status, the dashboard and cancel see it whole
            call(lambda: network.train(
                rows, Y, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                micro_batches=micro_batches, optimizer={"name": optimizer, "alpha": alpha}, mode=mode, seed=seed,
                progress=None if sys.stderr.isatty() else False, checkpoint_every=checkpoint_every,
                checkpoint_path=(checkpoint_name or f"{net}.npz") if checkpoint_every else None, on_epoch=said,
                resident=resident))
        except KeyboardInterrupt:  # Network.train cancelled it first
            stopped = getattr(network, "last_cancel", None)
            where = f"in epoch {stopped.epochs + 1} of {epochs}: " if stopped is not None and stopped.epochs < epochs \
                else ""
            raise click.ClickException(f"interrupted {where}{stopped or 'training stopped'}") from None
        if checkpoint_every:
            click.echo(f"checkpoint: {network.last_checkpoint} (on the broker's host)")


@click.command()
@click.argument("net")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@broker_option
@timeout_option
def save(net, path, broker, timeout):
    """Write network NET (weights, optimizer state, encoder, spec) to the file PATH."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise click.ClickException(f"cannot write {path}: folder {folder} does not exist")
    with connect(broker, timeout) as c:
        network = call(lambda: c.network(net))
        call(lambda: network.save(path))
    click.echo(f"saved {net} to {path}")


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@broker_option
@timeout_option
def load(path, broker, timeout):
    """Start a network from a file written by `mesh save` (or a checkpoint); prints its id."""
    with connect(broker, timeout) as c:
        click.echo(call(lambda: c.load(path)).id)


@click.command()
@click.argument("net")
@broker_option
@timeout_option
def cancel(net, broker, timeout):
    """Stop NET's training (at a step boundary) and online runs; it is ready again after."""
    with connect(broker, timeout) as c:
        r = call(lambda: c.network(net).cancel())
    if "train" in r.get("cancelled", []):
        click.echo(f"cancelled training of {net} after {r['epochs']} epochs, {r['steps']} steps; {r['state']}")
    elif r.get("cancelled"):
        click.echo(f"cancelled the online runs of {net}; {r['state']}")
    else:
        click.echo(f"nothing to cancel: {net} is {r['state']}")


@click.command()
@click.argument("net")
@broker_option
@timeout_option
def drop(net, broker, timeout):
    """End network NET's processes."""
    with connect(broker, timeout) as c:
        call(lambda: c.network(net).drop())
