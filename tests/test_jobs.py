"""The broker's jobs driven by events alone: no process, no socket, no clock.

A FakeMesh wires a job's Ports to recorders (what was sent to which group,
what each client was told) and plays the groups' side by hand: an output
here, a DONE there, in the order a test chooses. The sequences of the six
bugs of the last review are replayed here, each in milliseconds."""
import collections

import numpy as np
import pytest

from mesh import wire
from mesh.broker import budgets
from mesh.broker.dataflow import Flow
from mesh.broker.jobs import Backprop, Predict
from mesh.broker.network import Network
from mesh.broker.ports import Ports
from mesh.broker.records import GroupRecord, SnapshotRecord
from mesh.broker.resident import ResidentRun
from mesh.broker.states import TRANSITIONS, Event, IllegalTransition, Lifecycle, State
from mesh.broker.steplog import SNAPSHOT_EVERY
from mesh.broker.cancel import Cancel
from mesh.broker.trainopts import options
from mesh.broker.training import AHEAD, AsyncRun, ExactRun, Train
from mesh.encoder import Encoder
from mesh.spec import Spec


class FakeMesh:
    """One network, one group per layer, on no worker at all."""

    def __init__(self, sizes=(3, 1), inputs=2):
        self.now = 0.0
        self.sent, self.replies, self.abandoned, self.broken = [], [], [], []
        self.net = net = Network("n1", Spec(list(sizes), dtype="float64"), Encoder(inputs))
        net.layer1_width = inputs
        for layer, size in enumerate(sizes):
            gid = f"n1.{layer + 1}.0"
            net.layers[layer].append(gid)
            net.groups[gid] = GroupRecord(gid=gid, layer=layer, lo=0, hi=size, host="h", pid=100 + layer, alive=True,
                                          worker_name="w1", worker=b"w1")
        net.life.fire(Event.CREATED)
        net.snapshot = SnapshotRecord(id=0, step=0, inputs=inputs)
        self.flow = Flow(self.send, self.abandon)
        self.ports = Ports(flow=self.flow, reply=self.reply, wire_up=None, respawn=None,
                           abandon_step=self.abandon, break_net=lambda net, why: self.broken.append(why),
                           run_deferred=lambda net: None, take_snapshot=lambda net, then: then(),
                           snapshot_due=lambda net: None, checkpoint_file=lambda name: name,
                           encode_again=lambda net, rows: (None, 0),
                           clock=lambda: self.now, to_worker=self.to_worker)
        self.to_workers = []  # (worker, header, arrays): a resident run's data (resident.py)

    # what the broker would do
    def send(self, net, gid, header, arrays=()):
        self.sent.append((gid, header, arrays))

    def to_worker(self, wid, header, arrays=()):
        self.to_workers.append((wid, header, arrays))

    def reply(self, client, req, arrays=(), **fields):
        self.replies.append((client, req, fields, list(arrays)))

    def abandon(self, net, why):
        self.abandoned.append(why)

    # what the groups would do
    def forwards(self):
        """Passes sent into layer 1 so far, in order."""
        return [self.net.passes.get(h["seq"]) for gid, h, _ in self.sent if h["k"] == wire.FWD]

    def output(self, p, loss=None):
        h = {"seq": p.seq, "src": 0}
        if loss is not None:
            h["loss"] = loss
        self.flow.out(self.net, h, [np.full((p.rows, self.net.spec.sizes[-1]), 0.5)])

    def done(self, p):
        self.flow.done(self.net, {"seq": p.seq}, [])

    def sent_kinds(self, kind):
        return [h for _, h, _ in self.sent if h["k"] == kind]

    def answer(self, req):
        return next(fields for _, r, fields, _ in self.replies if r == req and fields.get("k") != wire.PROGRESS)


def train_job(m, rows=8, batch=4, mode="exact", epochs=1, req=1, micro=1, resident=False):
    """A run the broker feeds step by step (resident=False; resident.py's run: resident=True)."""
    X = np.arange(rows * 2, dtype=np.float64).reshape(rows, 2) / 10
    Y = np.full((rows, 1), 0.25)
    job = Train(m.ports, m.net, "c1", req, 60.0, X, Y, {"epochs": epochs, "batch_size": batch, "mode": mode,
                                                         "shuffle": False, "micro_batches": micro,
                                                         "resident": resident})
    job.begin()
    for gid in m.net.groups:  # every group took the optimizer settings
        job.on_ready(gid)
    return job


def test_a_training_run_is_its_modes_and_its_options_rebuild_it():
    for mode, resident, run in (("exact", False, ExactRun), ("async", False, AsyncRun), ("exact", True, ResidentRun),
                                ("async", True, AsyncRun)):  # async: never resident
        job = train_job(FakeMesh(), mode=mode, resident=resident)
        assert type(job) is run and (job.mark is None) == (mode == "async")  # only an exact run resumes
        assert options(job.opts, 8) == job.options  # what a standby rebuilds it from (replication.py)
    m = FakeMesh()
    with pytest.raises(ValueError, match="unknown mode 'sync'"):
        Train(m.ports, m.net, "c1", 1, 60.0, np.zeros((4, 2)), np.zeros((4, 1)), {"mode": "sync"})


def test_a_resident_run_stages_once_grants_steps_and_logs_them_from_batched_losses():
    m = FakeMesh(sizes=(3, 1))
    job = train_job(m, rows=10, batch=4, epochs=2, micro=2, resident=True)
    stages = [(w, h["part"], h["at"]) for w, h, _ in m.to_workers if h["k"] == wire.STAGE]
    assert stages == [(b"w1", "X", 0), (b"w1", "Y", 0)]  # once per host, both layers' groups on it
    assert budgets.resident_on([m.net], b"w1") == job.X.nbytes + job.Y.nbytes  # planned there, once
    assert budgets.resident_on([m.net], b"w2") == 0
    assert not m.sent_kinds(wire.RUN) and not m.sent_kinds(wire.FWD)  # nothing before the files are whole
    job.on_staged(b"w1", job.name, "X")
    assert not m.sent_kinds(wire.RUN)
    job.on_staged(b"w1", job.name, "Y")
    runs = [(gid, h, a) for gid, h, a in m.sent if h["k"] == wire.RUN]
    assert [gid for gid, _, _ in runs] == ["n1.1.0", "n1.2.0"]  # the row reader, then the output group
    _, h, (idx,) = runs[0]
    assert (h["first"], h["batch"], h["micro"]) == (1, 4, 2) and idx.tolist() == list(range(10))  # the epoch
    assert (runs[1][1]["lo"], runs[1][1]["hi"]) == (0, 1) and m.net.step == 3 and not m.sent_kinds(wire.FWD)
    out = {"gid": "n1.2.0", "net": "n1"}
    job.on_losses(m.net.groups["n1.2.0"], dict(out, steps=[1, 2]), [np.array([0.4, 0.8])])
    assert job.steps_done == 2 and len(m.sent_kinds(wire.RUN)) == 2  # the grant is not whole: no new one
    assert [e[1] for e in m.net.log if e[0] == "step"] == [1, 2]  # logged, with rows a recovery replays
    step = [e for e in m.net.log if e[0] == "step"][1]
    assert [X.tolist() for X, _ in step[2]] == [job.X[[4, 5]].tolist(), job.X[[6, 7]].tolist()]
    job.on_losses(m.net.groups["n1.2.0"], dict(out, steps=[3]), [np.array([0.2])])  # the epoch's end
    assert job.epoch == 1 and job.history == [pytest.approx(1.4 / 10)]
    runs = [(gid, h) for gid, h, _ in m.sent if h["k"] == wire.RUN]
    assert len(runs) == 4 and runs[-1][1]["first"] == 4  # the next epoch's grant, new ids
    job.on_losses(m.net.groups["n1.2.0"], dict(out, steps=[4, 5, 6]), [np.array([0.1, 0.1, 0.1])])
    assert m.answer(1)["history"] == [pytest.approx(0.14), pytest.approx(0.03)] and m.answer(1)["resident"]
    assert [(w, h["k"]) for w, h, _ in m.to_workers[-1:]] == [(b"w1", wire.UNSTAGE)]  # its files go
    assert budgets.resident_on([m.net], b"w1") == 0


def test_a_cancel_cuts_a_resident_runs_grant_where_the_row_readers_got():
    m = FakeMesh(sizes=(3, 1))
    job = train_job(m, rows=12, batch=2, epochs=1, micro=1, resident=True)
    job.on_staged(b"w1", job.name, "X")
    job.on_staged(b"w1", job.name, "Y")
    (_, h, (idx,)), = [(gid, h, a) for gid, h, a in m.sent if h["k"] == wire.RUN and gid == "n1.1.0"]
    assert len(idx) == 12 and m.net.step == 6  # 6 steps granted: fewer than the first grant
    out = m.net.groups["n1.2.0"]
    job.on_losses(out, {"steps": [1]}, [np.array([0.5])])
    Cancel(m.ports, m.net, "c2", 9, 60.0).begin()
    assert [gid for gid, h, _ in m.sent if h["k"] == wire.CUT] == ["n1.1.0"]  # the row reader: how far?
    job.on_losses(out, {"steps": [2]}, [np.array([0.5])])
    job.on_cut(m.net.groups["n1.1.0"], {"started": 3})
    assert [(gid, h.get("beyond")) for gid, h, _ in m.sent if h["k"] == wire.CUT][1:] == [("n1.2.0", 3)]
    assert m.net.step == 3 and not job.finished  # ids 4..6 go back unused; step 3 is on its way
    job.on_losses(out, {"steps": [3]}, [np.array([0.5])])
    assert job.finished and job.steps_done == 3
    assert m.answer(9)["steps"] == 3 and m.answer(9)["cancelled"] == ["train"]


def boundaries_run(m, every, resident):
    """A run of 150 one-row steps whose snapshots and checkpoints are noted in `taken` as
    (what, steps done, log length, mini-batches on their way)."""
    taken = []

    def snapshot(net, then):
        taken.append(("snapshot", job.steps_done, len(net.log), len(job.batches)))
        net.log.clear()
        then()

    def checkpoint(then):
        taken.append(("checkpoint", job.steps_done, len(m.net.log), len(job.batches)))
        then()
    m.ports.take_snapshot = snapshot
    job = Train(m.ports, m.net, "c1", 1, 60.0, np.zeros((150, 2)), np.zeros((150, 1)),
                {"batch_size": 1, "shuffle": False, "micro_batches": 1, "checkpoint_every": every,
                 "checkpoint_path": "x" if every else None, "resident": resident})
    job.write_checkpoint = checkpoint
    job.begin()
    for gid in m.net.groups:
        job.on_ready(gid)
    return job, taken


@pytest.mark.parametrize("every", [0, 50])
def test_a_resident_runs_grants_end_where_a_snapshot_or_a_checkpoint_is_due(every):
    m = FakeMesh()
    job, taken = boundaries_run(m, every, resident=True)
    job.on_staged(b"w1", job.name, "X")
    job.on_staged(b"w1", job.name, "Y")
    granted = 0
    while not job.finished:
        runs = [h for gid, h, a in m.sent if h["k"] == wire.RUN and gid == "n1.2.0"]
        assert len(runs) == granted + 1, "one grant at a time"
        granted += 1
        first, n = runs[-1]["first"], len([a for gid, h, a in m.sent if h is runs[-1]][0][0])
        m.now += 0.001 * n  # a millisecond a step: grants of about GRANT_SECONDS
        job.on_losses(m.net.groups["n1.2.0"], {"steps": list(range(first, first + n))}, [np.full(n, 0.1)])
    snaps = [t for t in taken if t[0] == "snapshot"]
    assert snaps and all(log == SNAPSHOT_EVERY for _, _, log, _ in snaps), taken  # never past it
    if every:
        assert [t[1] for t in taken if t[0] == "checkpoint"] == [50, 100, 150]
    assert job.steps_done == 150 and m.answer(1)["resident"]


def test_the_state_machine_refuses_what_cannot_happen():
    life = Lifecycle("n1")
    with pytest.raises(IllegalTransition, match="train started.*starting"):
        life.fire(Event.TRAIN_STARTED)
    for event, state in [(Event.CREATED, State.READY), (Event.TRAIN_STARTED, State.TRAINING),
                         (Event.GROUP_LOST, State.RECOVERING), (Event.RECOVERED_TRAINING, State.TRAINING),
                         (Event.TRAIN_ENDED, State.READY), (Event.FAILED, State.FAILED), (Event.DROPPED, State.DROPPED)]:
        assert life.fire(event, why="a test") is state
    assert life.failure == "a test"
    with pytest.raises(IllegalTransition):
        life.fire(Event.DROPPED)
    assert {s for s, _ in TRANSITIONS} | {s for s in TRANSITIONS.values()} == set(State)  # every state is reachable


def test_a_done_that_overtakes_its_output_still_finishes_training():
    """Bug 1: in async mode the output group starts the backward before the broker
    hears the output, so layer 1's DONE can come first; training used to hang."""
    m = FakeMesh()
    job = train_job(m, rows=8, batch=4, mode="async")
    while not job.finished:
        p = next(p for p in m.forwards() if p is not None and p.seq in m.net.passes and p.in_flight)
        m.done(p)          # the DONE first
        m.output(p, loss=0.5)
    assert m.answer(1)["ok"] and len(m.answer(1)["history"]) == 1
    assert m.net.state is State.READY and m.net.in_flight == 0 and not m.net.passes


def test_a_refused_backward_of_a_pass_the_broker_let_go_rebuilds():
    """Bug 2: a group refuses the backward of a step whose client was answered and
    whose passes the broker forgot: the step is half applied, so rebuild."""
    m = FakeMesh()
    m.flow.fault(m.net, {"seq": 999, "step": 3, "error": "pass 999 is not held here"}, [])
    assert m.abandoned == ["step 3 failed: pass 999 is not held here"]
    m.flow.fault(m.net, {"seq": 998, "error": "a predict's pass"}, [])  # no step: nothing to rebuild
    assert len(m.abandoned) == 1


def test_a_backprop_that_failed_while_waiting_is_never_sent():
    """Bug 3: a backprop waiting for its predict expires; when the predict is then
    answered, the backward must not go (its step was abandoned)."""
    m = FakeMesh()
    predict = Predict(m.ports, m.net, "c1", 1, 60.0, np.zeros((2, 2)), keep=True, chunk=1).begin()
    backprop = Backprop(m.ports, m.net, "c1", 2, 0.5, np.ones((2, 1)), 0.1).begin()
    assert backprop.predict is predict and m.net.awaiting
    m.now = 1.0
    backprop.expire()
    assert not m.answer(2)["ok"] and "did not answer" in m.answer(2)["error"]
    assert m.abandoned and "backprop step 1" in m.abandoned[0]
    for p in m.forwards():
        m.output(p)
    assert m.answer(1)["ok"]
    assert m.sent_kinds(wire.BWD) == [] and not m.net.awaiting


def test_async_passes_sent_again_after_a_recovery_take_new_step_ids():
    """Bug 4: after a recovery every id handed out counts as done; a pass sent again
    under its old id would be taken as applied and skipped by the groups."""
    m = FakeMesh()
    job = train_job(m, rows=8, batch=4, mode="async")
    old = {p.step for p in m.forwards()}
    m.net.all_steps_done()  # what the recovery does before restarting the job
    job.restart()
    new = [p for p in m.forwards()[len(old):] if p is not None]
    assert new and all(p.step > max(old) for p in new)


def test_a_second_remembered_predict_keeps_the_first_in_flight():
    """Bug 5: a pipelining client sends a second remembered predict before the first
    is answered: the first must still be answered, whole."""
    m = FakeMesh()
    first = Predict(m.ports, m.net, "c1", 1, 60.0, np.zeros((3, 2)), keep=True, chunk=1).begin()
    Predict(m.ports, m.net, "c1", 2, 60.0, np.zeros((1, 2)), keep=True, chunk=1).begin()
    for p in m.forwards():
        m.output(p)
    assert m.answer(1)["ok"] and m.replies[0][3][0].shape == (3, 1)
    assert m.answer(2)["ok"]
    assert not first.passes[0].keep  # forgotten once answered
    assert [p.rows for p in m.net.remembered["c1"]] == [1]


def test_a_backprop_finds_its_predict_among_all_its_passes():
    """Bug 6: after a recovery the answered passes of a predict belong to no job; the
    backprop must find the predict through a pass still on its way."""
    m = FakeMesh()
    predict = Predict(m.ports, m.net, "c1", 1, 60.0, np.zeros((2, 2)), keep=True, chunk=1).begin()
    first, second = m.forwards()
    m.output(first)
    first.job = None  # as a recovery leaves an answered, re-forwarded pass
    backprop = Backprop(m.ports, m.net, "c1", 2, 60.0, np.ones((2, 1)), 0.1).begin()
    assert backprop.predict is predict
    m.output(second)
    assert m.answer(2)["ok"] and len(m.sent_kinds(wire.BWD)) == 2


def test_cancel_stops_training_at_a_step_boundary():
    """Cancel mid-step: the steps on their way are sent whole, no new step is handed out,
    the network is ready, and both the trainer and the canceller are told."""
    m = FakeMesh()
    job = train_job(m, rows=32, batch=4, mode="exact", epochs=3)
    first = m.forwards()
    assert len(first) == AHEAD and m.net.state is State.TRAINING  # mini-batches ahead, ordered by the groups
    cancel = Cancel(m.ports, m.net, "c2", 7, 60.0).begin()
    assert not cancel.finished  # steps are on their way
    for p in first:
        m.output(p, loss=0.25)  # each step's output: its backward went from the output group
    assert len(m.forwards()) == AHEAD  # nothing more was sent
    told = m.answer(1)
    assert told["ok"] is False and told["cancelled"] and told["steps"] == AHEAD and told["epochs"] == 0
    assert m.answer(7) == {"ok": True, "cancelled": ["train"], "epochs": 0, "steps": AHEAD, "state": "ready"}
    assert m.net.state is State.READY and m.net.trainer is None and job.finished
    assert m.net.sent.done == m.net.step == AHEAD  # every id handed out was sent


def test_exact_steps_go_ahead_each_after_the_one_before_and_log_in_order():
    """The next mini-batches enter before this one's output is back; each names the
    step before it, so the groups keep the order. Steps are logged, and counted, in order."""
    m = FakeMesh()
    job = train_job(m, rows=32, batch=4, mode="exact")
    sent = m.forwards()
    assert [p.after for p in sent] == [0, 1, 2, 3] and [p.step for p in sent] == [1, 2, 3, 4]
    assert m.net.released.done == 4 and m.net.sent.done == 0  # entered whole, none logged yet
    m.output(sent[1], loss=0.5)  # step 2's output before step 1's (another output socket): not logged yet
    assert not [e for e in m.net.log if e[0] == "step"] and job.steps_done == 0 and job.loss_sum == 0
    m.output(sent[0], loss=0.5)
    assert [e[1] for e in m.net.log if e[0] == "step"] == [1, 2] and job.steps_done == 2 and len(m.forwards()) == 6
    assert job.mark["batch_at"] == 8 and job.mark["loss_sum"] == 1.0  # the mark counts logged steps only
    while job.forwarding:
        m.output(min(job.forwarding, key=lambda p: p.seq), loss=0.5)
    for p in list(job.outstanding):  # the last mini-batch reports its dones
        m.done(p)
    assert m.answer(1)["ok"] and m.answer(1)["history"] == [0.5 * 8 / 32]
    assert [e[1] for e in m.net.log if e[0] == "step"] == list(range(1, 9))


@pytest.mark.parametrize("every", [0, 10])
def test_steps_ahead_stop_where_a_snapshot_or_a_checkpoint_is_due(every):
    """No mini-batch starts past the step after which the log is long enough for a
    snapshot, or a checkpoint is due: the steps on their way drain, and it is taken there."""
    m = FakeMesh()
    job, taken = boundaries_run(m, every, resident=False)
    while job.forwarding:
        m.output(min(job.forwarding, key=lambda p: p.seq), loss=0.1)
    for p in list(job.outstanding):  # the last mini-batch reports its dones: the run ends
        m.done(p)
    snaps = [t for t in taken if t[0] == "snapshot"]
    assert len(snaps) == 2 and all(log == SNAPSHOT_EVERY and ahead == 0 for _, _, log, ahead in snaps), taken
    if every:
        assert [steps for kind, steps, _, _ in taken if kind == "checkpoint"] == list(range(10, 150, 10)) + [150]
    assert job.steps_done == 150


def test_a_predict_of_another_client_enters_between_training_steps():
    """Fairness: a predict names the latest step handed out; it enters once that step
    has entered whole, not only once training ends."""
    m = FakeMesh()
    train_job(m, rows=400, batch=4, mode="exact")
    predict = Predict(m.ports, m.net, "c9", 3, 60.0, np.zeros((1, 2)), keep=False, chunk=1).begin()
    assert predict.passes[0].in_flight and predict.passes[0].after == AHEAD


def test_a_recovery_sends_the_unlogged_mini_batches_again_in_order():
    m = FakeMesh()
    job = train_job(m, rows=16, batch=4, mode="exact", micro=2)
    first = m.forwards()
    m.output(first[0], loss=1.0)
    m.output(first[1], loss=1.0)  # step 1 whole: logged
    m.output(first[2], loss=1.0)  # half of step 2: not logged, not counted; the recovery below loses it
    m.net.all_steps_done()  # what the recovery does before restarting the job
    job.restart()
    again = m.forwards()[len(first):]
    assert [p.X.tolist() for p in again] == [p.X.tolist() for p in first[2:8]]  # step 1 is replayed from the log
    assert [p.step for p in again] == [5, 5, 6, 6, 7, 7] and job.loss_sum == 2.0 and job.epoch_rows == 4


def test_cancel_between_async_steps_leaves_no_id_unsent():
    m = FakeMesh()
    train_job(m, rows=400, batch=4, mode="async")
    in_flight = [p for p in m.forwards() if p is not None]
    assert 0 < len(in_flight) <= m.net.window  # async keeps a window, not the whole epoch, in flight
    Cancel(m.ports, m.net, "c2", 7, 60.0).begin()
    for p in in_flight:
        m.output(p, loss=0.1)
        m.done(p)
    assert m.answer(1)["cancelled"] and m.answer(1)["steps"] == len(in_flight)
    assert m.net.sent.done == m.net.step and m.net.state is State.READY


def test_cancel_with_nothing_running_answers_at_once():
    m = FakeMesh()
    m.net.online_runs["r1"] = 3
    Cancel(m.ports, m.net, "c2", 7, 60.0).begin()
    assert m.answer(7) == {"ok": True, "cancelled": ["online"], "state": "ready"}
    assert "r1" in m.net.cancelled_runs


class Recording(FakeMesh):
    """FakeMesh whose broker-side ports record their calls too."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = []
        self.snapshots = []
        self.ports.respawn = lambda net, gid: self.calls.append(("respawn", gid))
        self.ports.wire_up = lambda net, layers=None, optimizer=None, restore=False: self.calls.append(
            ("wire_up", restore))
        self.ports.take_snapshot = lambda net, then: self.snapshots.append(then)


def test_create_spawns_wires_and_snapshots_before_it_answers():
    from mesh.broker.jobs import Create
    m = Recording()
    m.net.life = Lifecycle("n1")  # a new network: starting
    job = Create(m.ports, m.net, "c1", 1, 60.0).begin()
    assert m.calls == [("respawn", "n1.1.0"), ("respawn", "n1.2.0")]
    job.on_hello("n1.1.0")
    assert ("wire_up", False) not in m.calls  # not before every group said hello
    job.on_hello("n1.2.0")
    job.on_ready("n1.1.0")
    job.on_ready("n1.2.0")
    assert m.net.state is State.STARTING and not m.replies  # the snapshot first
    m.snapshots.pop()()
    assert m.net.state is State.READY and m.answer(1) == {"ok": True, "net": "n1", "groups": 2, "inputs": m.net.inputs}


def test_a_snapshot_is_whole_only_when_every_copy_and_replica_is_in():
    from mesh.broker.snapshots import Snapshot
    m = FakeMesh()
    m.net.log = [("step", 1, [], 1, 0.1), ("step", 2, [], 1, 0.1)]
    m.net.sent.mark(1)
    done = []
    job = Snapshot(m.ports, m.net, lambda: done.append(True)).begin()
    snaps = m.sent_kinds(wire.SNAP)
    assert len(snaps) == 2 and {h["after"] for h in snaps} == {1}
    job.on_snapped("n1.1.0", {"snap": job.id, "step": 2, "ahead": 0})  # it had applied a later step
    job.on_snapped("n1.2.0", {"snap": job.id, "step": 1, "ahead": 0})
    job.on_kept("n1.1.0", {"snap": job.id})
    job.on_kept("n1.2.0", {"snap": job.id})
    assert not done and len(m.sent_kinds(wire.SNAP)) == 4  # asked again, under a new number
    for gid in m.net.groups:
        job.on_snapped(gid, {"snap": job.id, "step": 1, "ahead": 0})
    job.on_kept("n1.1.0", {"snap": job.id})
    assert not done  # one replica is not kept yet
    job.on_kept("n1.2.0", {"snap": job.id})
    assert done and m.net.snapshot == SnapshotRecord(id=job.id, step=1, inputs=2)
    assert [e[1] for e in m.net.log] == [2]  # the log keeps only what came after


def test_recovery_replays_the_log_then_snapshots_then_restarts_the_interrupted():
    from mesh.broker.recovery import Recover
    m = Recording()
    X, T = np.zeros((2, 2)), np.ones((2, 1))
    m.net.log = [("step", 1, [(X, T)], 2, 0.1)]
    m.net.groups["n1.2.0"].alive = False
    restarted = []
    predict = Predict(m.ports, m.net, "c1", 5, 60.0, X, keep=False, chunk=2)
    predict.restart = lambda: restarted.append(predict)
    job = Recover(m.ports, m.net, "group n1.2.0 died", [predict]).begin()
    assert m.net.state is State.RECOVERING and m.net.restarts == 1 and m.calls == [("respawn", "n1.2.0")]
    job.on_hello("n1.2.0")
    assert m.calls[-1] == ("wire_up", True)
    job.on_ready("n1.1.0")
    job.on_ready("n1.2.0")
    replay, = m.forwards()  # the logged step, again
    m.output(replay)
    assert len(m.sent_kinds(wire.BWD)) == 1
    m.done(replay)
    assert m.net.state is State.READY and not restarted  # a fresh snapshot comes first
    m.snapshots.pop()()
    assert restarted == [predict]


def test_what_is_logged_after_a_snapshot_was_asked_for_stays_in_the_log():
    """A GROW or OPTIM sent after the SNAP reaches each group after it: not in the copies."""
    from mesh.broker.snapshots import Snapshot
    m = FakeMesh()
    m.net.log = [("optim", {"name": "sgd"})]
    job = Snapshot(m.ports, m.net, lambda: None).begin()
    m.net.log.append(("optim", {"name": "adam"}))  # a train began meanwhile
    for gid in m.net.groups:
        job.on_snapped(gid, {"snap": job.id, "step": 0, "ahead": 0})
        job.on_kept(gid, {"snap": job.id})
    assert m.net.log == [("optim", {"name": "adam"})] and not m.net.snapshotting


def test_a_keeper_keeps_the_whole_snapshot_and_the_newest_only():
    from mesh.keeper import Keeper
    from mesh.neurons import Neurons
    k = Keeper()
    n = Neurons(np.ones((2, 3)), np.zeros(2), "tanh")
    for snap_id, whole in [(1, None), (2, 1), (3, 1), (4, 1)]:  # 2 and 3 were never whole
        k.keep_own(n, snap_id, 0, whole)
        k.keep_replica("n1.2.0", k.own[snap_id], whole)
    assert sorted(k.own) == [1, 4] and sorted(k.replicas["n1.2.0"]) == [1, 4]
    k.forget_all_but({"n1.3.0": None})
    assert k.replicas == {}
    with pytest.raises(ValueError, match="no snapshot number 2 here"):
        k.restore_own(2, "tanh")


def test_glorot_draws_no_bias_for_layer_1_and_any_rows_alone():
    from mesh.spec import initial_layer, initial_rows
    spec = Spec([700, 3], init="glorot", dtype="float64", seed=3)
    W, b = initial_layer(spec, 0, 5)
    assert not b.any()
    W2, _ = initial_rows(spec, 0, 5, 300, 650)
    np.testing.assert_array_equal(W[300:650], W2)


def test_a_read_larger_than_the_brokers_memory_is_refused_with_the_numbers(monkeypatch):
    """A client's weights() or save of a network the broker cannot hold whole is refused before
    any group is asked, not answered by the kernel's OOM killer; one that fits is asked for."""
    from mesh import hostmem
    from mesh.broker.jobs import Collect
    m = FakeMesh(sizes=(1000, 10), inputs=1000)  # float64: 1000 x 1001 + 10 x 1001 values, twice: ~15.4 MiB
    got = []
    monkeypatch.setattr(hostmem, "default_budget", lambda: (8 << 20, "a test's 8 MiB", "test"))
    Collect(m.ports, m.net, "c1", 1, 60.0, lambda job, layers, optim: got.append(layers)).begin()
    error = m.answer(1)["error"]
    assert not m.answer(1)["ok"] and "15 MiB at the broker" in error and "8 MiB (a test's 8 MiB)" in error
    assert not m.sent_kinds(wire.GET) and not got
    Collect(m.ports, m.net, "c1", 2, 60.0, lambda job, layers, optim: got.append(layers), layer=1).begin()
    assert len(m.sent_kinds(wire.GET)) == 1  # layer 2 alone (160 KiB) fits


def test_dropping_a_network_whose_create_is_under_way_drops_it_once():
    """The drop fails the create, whose failure drops the network too (to end what it
    started): the drop goes on without a second 'dropped' (it raised IllegalTransition)."""
    import functools
    import types
    from mesh.broker import building
    from mesh.broker.jobs import Create
    m = Recording()
    m.net.life = Lifecycle("n1")
    b = types.SimpleNamespace(nets={"n1": m.net}, flow=m.flow, workers={}, ports=m.ports, reply=m.reply,
                              pending=collections.deque())
    m.ports.end_net = functools.partial(building.end_net, b)
    m.ports.break_net = lambda net, why: net.life.can(Event.FAILED) and net.life.fire(Event.FAILED, why)
    Create(m.ports, m.net, "c1", 1, 60.0).begin()
    building.stop_net(b, m.net)
    for steps in b.pending:  # the STOPs, a slice of the loop's rounds at a time
        list(steps)
    assert m.net.state is State.DROPPED and "n1" not in b.nets
    assert not m.answer(1)["ok"] and "dropped" in m.answer(1)["error"]
