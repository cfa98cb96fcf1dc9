"""The `mesh` command. Every option can also be set from the environment:
MESH_BROKER for the broker address, MESH_<COMMAND>_<OPTION> for the rest
(e.g. MESH_WORKER_SLOTS=4). One module per group of commands."""
import sys

import click

from .. import __version__
from . import bench, demo, keys, network, serve, status
from .status import status_lines

__all__ = ["cli", "main", "status_lines"]


@click.group(context_settings={"auto_envvar_prefix": "MESH", "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mesh", message="%(prog)s %(version)s")
def cli():
    """neuromesh: a neural network run as a mesh of processes talking ZeroMQ."""


for _command in (serve.broker, serve.worker, serve.up, network.create, network.predict, network.train, network.save,
                 network.load, network.cancel, network.drop, status.status, demo.demo, bench.bench, keys.keys):
    cli.add_command(_command)


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
