"""A pair's client after a failover (failover.py), without brokers: what it sends the other
broker is every unanswered request, in order, and the remembered predicts that backprops still
to come train on, since the new broker does not hold their passes."""
import zmq

from mesh import sockets, wire
from mesh.failover import Failover


class Connection:
    """What a Failover reads of its connection: the requests not yet answered, and the socket."""

    def __init__(self, sock):
        self.sent, self.sock = {}, sock


def sent_again(requests, answered):
    """The ids a failover sends again after `requests` [(id, kind, net)] were sent, remembered
    predicts all, and those in `answered` were answered, in order."""
    ctx = zmq.Context()
    try:
        out, broker = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        broker.bind("inproc://broker")
        out.connect("inproc://broker")
        conn = Connection(out)
        failover = Failover(conn)
        for rid, kind, net in requests:
            conn.sent[rid] = (kind, 1.0)
            failover.sent(rid, {"k": kind, "id": rid, "net": net, "keep": kind == wire.PREDICT}, [])
        for rid in answered:  # as Connection.wait does: answered, then forgotten
            failover.answered(rid)
            del conn.sent[rid]
            failover.forget(rid)
        failover.resend()
        again = []
        while broker.poll(100):
            again.append(sockets.recv(broker)[1]["id"])
        return again
    finally:
        ctx.destroy(linger=0)


def test_the_predict_an_unanswered_backprop_trains_on_goes_again():
    requests = [(1, wire.PREDICT, "n1"), (2, wire.BACKPROP, "n1"), (3, wire.PREDICT, "n1"),
                (4, wire.BACKPROP, "n1")]
    assert sent_again(requests, answered=[1, 2, 3]) == [3, 4]  # 1 was trained on by 2, which was answered


def test_a_networks_last_predict_no_backprop_used_goes_again():
    requests = [(1, wire.PREDICT, "n1"), (2, wire.BACKPROP, "n1"), (3, wire.PREDICT, "n1"),
                (4, wire.PREDICT, "n2")]
    assert sent_again(requests, answered=[1, 2, 3, 4]) == [3, 4]  # a backprop may still come for each
    assert sent_again(requests[:2], answered=[1, 2]) == []  # n1's last predict was used: nothing


def test_every_unanswered_request_goes_again_in_order():
    requests = [(1, wire.STATUS, None), (2, wire.PREDICT, "n1"), (3, wire.BACKPROP, "n1"), (4, wire.STATUS, None)]
    assert sent_again(requests, answered=[]) == [1, 2, 3, 4]
    assert sent_again(requests, answered=[1, 2, 3]) == [4]  # n1's only predict was used by 3
