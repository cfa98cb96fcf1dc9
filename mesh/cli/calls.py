"""What the commands that call a broker share: --broker and --timeout, a client made
from them, and the ways a call fails as one-line errors."""
import click

from .. import settings


broker_option = click.option("--broker", "broker", envvar=settings.BROKER, default="tcp://127.0.0.1:5555",
                             show_default=True, help="Address of the broker, or of a pair's two: tcp://A:5555,tcp://B:5555.")
timeout_option = click.option("--timeout", type=float, default=60.0, show_default=True,
                              help="Seconds to wait for an answer.")


def connect(broker, timeout):
    """A client of the broker; a bad address or keys folder is a one-line error."""
    import zmq

    from ..client import Client
    from ..security import KeyError_
    try:
        return Client(broker, timeout=timeout)
    except (ValueError, zmq.ZMQError) as e:  # not a broker address (brokers.parse), or one zmq cannot dial
        raise click.BadParameter(f"{broker!r}: {e}" if isinstance(e, zmq.ZMQError) else str(e),
                                 param_hint="--broker") from None
    except KeyError_ as e:
        raise click.ClickException(str(e)) from None


def call(fn):
    """Run a client call; a refusal, silence, bad data or a file that cannot be written
    is a one-line error, not a traceback."""
    from ..client import MeshTimeout, RemoteError
    try:
        return fn()
    except (RemoteError, MeshTimeout, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
