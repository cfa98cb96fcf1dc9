"""Everything a job may ask of the broker, and nothing more.

Jobs (jobs.py, training.py, recovery.py, snapshots.py) never hold the Broker:
they get one Ports, whose every member is a plain callable given at
construction. The broker wires the real ones (loop.py); a test wires fakes
and drives a job with events alone, in milliseconds (tests/test_jobs.py)."""
import time


class Ports:
    def __init__(self, *, flow, reply, wire_up, respawn, abandon_step, break_net, run_deferred, take_snapshot,
                 snapshot_due, checkpoint_file, encode_again, clock=time.monotonic,
                 when_shipped=lambda then: then(), rebroker=None, fault=lambda event, count: None,
                 end_net=lambda net: None, to_worker=lambda wid, header, arrays=(): None,
                 in_slices=lambda steps: [None for _ in steps]):
        self.flow = flow                    # dataflow.Flow: to_group, submit, pump, finish_pass, send_backward
        self.reply = reply                  # (client, req, arrays=(), **fields): answer a client, never blocks
        self.wire_up = wire_up              # (net, layers, optimizer, restore=False): weights and neighbours to all
        self.respawn = respawn              # (net, gid): start group gid's process again
        self.abandon_step = abandon_step    # (net, why): a step id will never be sent whole: rebuild
        self.break_net = break_net          # (net, why): the network cannot work any more
        self.run_deferred = run_deferred    # (net): requests that waited for a recovery or snapshot
        self.take_snapshot = take_snapshot  # (net, then): read every group's state after the steps sent
        self.snapshot_due = snapshot_due    # (net): take one if the log has grown long
        self.checkpoint_file = checkpoint_file  # (name) -> a path inside the broker's checkpoint folder
        self.encode_again = encode_again    # (net, rows) -> (matrix, columns added): grow for what predict left out
        self.clock = clock                  # seconds, for deadlines
        self.when_shipped = when_shipped    # (then): then() once the standby holds the state as it is now
        self.rebroker = rebroker            # (net, gid): after a failover, tell a live group where we are
        self.fault = fault                  # (event, count): a test's fault at a known point (faults.py)
        self.end_net = end_net              # (net): drop it and end every process it started
        self.to_worker = to_worker          # (worker id, header, arrays=()): a resident run's data to a host
        self.in_slices = in_slices          # (steps): run an iterable's steps a slice of each round of the loop
        self.jobs = set()                   # every unfinished job, for deadlines
