"""A broker as a process (`mesh broker`): bound to its address, with its
dashboard and its peer if asked, run until stopped; a fenced broker of a
pair exits with FENCED_EXIT."""
import zmq

from ..lifecycle import profiled
from .loop import Broker
from .pairing import FENCED_EXIT, Fenced


class BindError(RuntimeError):
    """The broker's address cannot be bound (in use, or not this host's)."""


def main(bind, keys=None, checkpoint_dir=None, dashboard=None, peer=None, primary=False, pair_secret=None,
         heartbeat_expiry=None):
    """dashboard: where to serve it (a dashboard.Listen), or None for none.
    peer: the other broker's client address, for a pair (pairing.py); primary: this one starts active."""
    try:
        broker = Broker(bind, keys=keys, checkpoint_dir=checkpoint_dir, peer=peer, primary=primary,
                        pair_secret=pair_secret, heartbeat_expiry=heartbeat_expiry)
    except zmq.ZMQError as e:
        raise BindError(f"cannot listen on {bind}: {e}") from None
    print(f"mesh broker listening on {broker.address}", flush=True)
    if dashboard is not None:
        from ..dashboard import Dashboard  # here: the dashboard reads the broker package (statusview.py)
        try:
            broker.dashboard = Dashboard(dashboard, broker)
        except OSError as e:
            broker.close()
            raise BindError(f"cannot serve the dashboard on {dashboard.host}:{dashboard.port}: {e.strerror or e}; "
                            f"choose another with --dashboard ADDR:PORT (port 0: any free one), or --dashboard off")
        print(f"dashboard: {broker.dashboard.url}", flush=True)
    if peer:
        print(f"mesh broker: one of a pair with {peer} ({'primary' if primary else 'backup'})", flush=True)
    try:
        with profiled("broker"):
            broker.run()
    except KeyboardInterrupt:
        pass
    except Fenced as e:
        print(e.code, flush=True)
        raise SystemExit(FENCED_EXIT) from None
    finally:
        broker.close()
